"""What killed runs leave behind: cloud stacks whose run is over (a killed dstack, a failed
teardown), which cost money until destroyed, and temporary files that killed processes left
in DSTACK_HOME and the local store. Where the store is a shared bucket, the stacks include
other homes' whose runs are over (dstack.backends.cloud.team): any home can collect them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.backends.base import Leftover, Notes

if TYPE_CHECKING:
    from dstack.home import Home
    from dstack.service.session import Session

# What dstack.atomic, the store and the blob cache write before a rename.
TEMP_PREFIXES = (".tmp-", ".dstack-")
TEMP_AGE = 600.0  # seconds unchanged before a temporary file counts as left behind


@dataclass(frozen=True)
class TempFiles:
    paths: list[Path]
    size: int  # bytes


def leftovers(session: Session) -> list[Leftover]:
    """What the backends made for runs that are over, each with the reason (a run whose
    supervisor died is finished or resumed first)."""
    from dstack.backends import registry
    from dstack.backends.base import Context

    session.recover()
    return registry.leftovers(Context(session.home, session.state, session.store))


def clean(session: Session, items: list[Leftover], notes: Notes) -> list[str]:
    """Remove each leftover through its backend; the names of those that could not be
    (their errors went to ``notes``)."""
    from dstack.backends import registry
    from dstack.backends.base import Context

    ctx = Context(session.home, session.state, session.store, notes=notes)
    return [item.name for item in items if not registry.clean(ctx, item)]


def sweep_temp_files(session: Session, dry_run: bool, older_than: float = TEMP_AGE) -> TempFiles:
    """The temporary files left behind (removed unless ``dry_run``) and their size."""
    found, size = [], 0
    for path in temp_files(session.home, older_than):
        try:
            size += path.lstat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
        found.append(path)
    return TempFiles(found, size)


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
