"""`dstack gc`: find and destroy cloud stacks whose run is no longer alive (its supervisor was
killed, its machine lost power, a teardown failed), so nothing keeps costing money; and remove
the temporary files that killed processes left in DSTACK_HOME and the local store."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dstack.cli.common import age, print_json, table

if TYPE_CHECKING:
    from dstack.home import Home

# What dstack.atomic, the store and the blob cache write before a rename.
TEMP_PREFIXES = (".tmp-", ".dstack-")
TEMP_AGE = 600.0  # seconds unchanged before a temporary file counts as left behind


def register(app: typer.Typer) -> None:
    app.command(
        help="Destroy the cloud stacks of runs that are no longer alive (a killed dstack, a "
        "failed teardown) and remove temporary files that killed processes left behind "
        "(unchanged for 10 minutes); --dry-run only lists them."
    )(gc)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List them, destroy nothing"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    from dstack.backends.teardown import teardown
    from dstack.cli.common import open_state
    from dstack.runner.recover import recover

    home, state = open_state()
    recover(home, state)  # a run whose supervisor died is finished (or resumed) first
    _remove_temp_files(home, dry_run)
    found = orphans(state)
    if as_json:
        print_json(found)
    elif found:
        table(
            ["STACK", "BACKEND", "STATUS", "CREATED", "WHY"],
            [
                [s["stack"], s["backend"], s["status"], age(s["created_at"]), s["why"]]
                for s in found
            ],
            shrink=("WHY", "STACK"),
        )
    else:
        sys.stderr.write("No stack is left behind.\n")
    if dry_run or not found:
        return

    def note(text: str) -> None:
        sys.stderr.write(f"dstack: {text}\n")

    failed = [s["stack"] for s in found if not teardown(home, state, s["stack"], note)]
    if failed:
        sys.stderr.write(f"Could not tear down: {', '.join(failed)} (see the errors above).\n")
        raise typer.Exit(1)
    sys.stderr.write(f"Tore down {len(found)} stack{'s' if len(found) != 1 else ''}.\n")


def orphans(state: Any) -> list[dict[str, Any]]:
    """The stacks whose run is gone or finished, with the reason."""
    from dstack.backends.ledger import Ledger

    found = []
    for stack in Ledger(state).left_behind():
        why = (
            f"its run is {state.run(stack.run_name).status}"
            if state.has_run(stack.run_name)
            else "its run was removed"
        )
        found.append(
            {
                "stack": stack.name,
                "run": stack.run_name,
                "job": stack.workflow,
                "backend": stack.backend,
                "status": stack.status,
                "created_at": stack.created_at,
                "why": why + (f"; {stack.error}" if stack.error else ""),
            }
        )
    return found


def _remove_temp_files(home: Home, dry_run: bool) -> None:
    leftovers = temp_files(home, TEMP_AGE)
    if not leftovers:
        return
    size = 0
    for path in leftovers:
        try:
            size += path.lstat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
    from dstack.spec.sizes import format_size

    verb = "Would remove" if dry_run else "Removed"
    sys.stderr.write(
        f"{verb} {len(leftovers)} temporary file{'s' if len(leftovers) != 1 else ''} "
        f"({format_size(size)}) left by killed dstack processes{':' if dry_run else '.'}\n"
    )
    if dry_run:
        sys.stderr.writelines(f"  {path}\n" for path in leftovers)


def temp_files(home: Home, older_than: float) -> list[Path]:
    """Temporary files unchanged for ``older_than`` seconds (a live process keeps writing, or
    renames, its own) in DSTACK_HOME (its config, caches, secrets, run records, the local
    store) and in the store's folder wherever it is."""
    from dstack.config import store_location

    roots = [home.root]
    location = store_location(home)
    if location is not None and location.url and location.url.startswith("file://"):
        from dstack.storage.location import split_url

        store = Path(split_url(location.url)[2])
        if not store.resolve().is_relative_to(home.root.resolve()):
            roots.append(store)
    cutoff = time.time() - older_than
    found = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not _not_dstacks(home, Path(folder, d))]
            for name in names:
                if not name.startswith(TEMP_PREFIXES):
                    continue
                path = Path(folder) / name
                try:
                    if path.lstat().st_mtime < cutoff:
                        found.append(path)
                except FileNotFoundError:
                    continue
    return found


def _not_dstacks(home: Home, folder: Path) -> bool:
    """A folder whose files dstack did not name, so a ``.tmp-`` file there may be a job's own:
    a job's folders (runs/RUN/JOB/work, its mirror) and the cached Python environments."""
    if folder == home.venvs_dir:
        return True
    return folder.is_relative_to(home.runs_dir) and len(folder.relative_to(home.runs_dir).parts) > 2
