"""`dstack gc`: find and destroy cloud stacks whose run is no longer alive (its supervisor was
killed, its machine lost power, a teardown failed), so nothing keeps costing money; and remove
the temporary files that killed processes left in DSTACK_HOME and the local store. With a
shared bucket store, teammates' stacks count too: those of runs that are over, and those whose
job ended and was sealed by its host while its laptop was away."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from dstack.cli.common import age, print_json, table

if TYPE_CHECKING:
    from dstack.service.gc import TempFiles


def register(app: typer.Typer) -> None:
    app.command(
        help="Destroy the cloud stacks of runs that are no longer alive (a killed dstack, a "
        "failed teardown; with a shared bucket store, teammates' too) and remove temporary "
        "files that killed processes left behind (unchanged for 10 minutes); --dry-run only "
        "lists them."
    )(gc)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List them, destroy nothing"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    from dstack.cli.common import open_session
    from dstack.service.gc import clean, leftovers, sweep_temp_files
    from dstack.service.session import stderr_notes

    session = open_session()
    found = leftovers(session)  # a run whose supervisor died is finished (or resumed) first
    _say_swept(sweep_temp_files(session, dry_run), dry_run)
    if as_json:
        print_json(
            [
                {
                    "stack": s.name,
                    "run": s.run,
                    "job": s.job,
                    "backend": s.backend,
                    "status": s.status,
                    "created_at": s.created_at,
                    "why": s.why,
                }
                for s in found
            ]
        )
    elif found:
        table(
            ["STACK", "BACKEND", "STATUS", "CREATED", "WHY"],
            [[s.name, s.backend, s.status, age(s.created_at), s.why] for s in found],
            shrink=("WHY", "STACK"),
        )
    else:
        sys.stderr.write("No stack is left behind.\n")
    if dry_run or not found:
        return
    failed = clean(session, found, stderr_notes)
    if failed:
        sys.stderr.write(f"Could not tear down: {', '.join(failed)} (see the errors above).\n")
        raise typer.Exit(1)
    sys.stderr.write(f"Tore down {len(found)} stack{'s' if len(found) != 1 else ''}.\n")


def _say_swept(swept: TempFiles, dry_run: bool) -> None:
    if not swept.paths:
        return
    from dstack.spec.sizes import format_size

    count = len(swept.paths)
    verb = "Would remove" if dry_run else "Removed"
    sys.stderr.write(
        f"{verb} {count} temporary file{'s' if count != 1 else ''} "
        f"({format_size(swept.size)}) left by killed dstack processes{':' if dry_run else '.'}\n"
    )
    if dry_run:
        sys.stderr.writelines(f"  {path}\n" for path in swept.paths)
