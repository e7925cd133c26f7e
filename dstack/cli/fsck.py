"""`dstack fsck`: verify the store and the pool hosts' caches, list what is wrong, and with
--repair remove what can be fetched or built again (see dstack.service.fsck)."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import typer

from dstack.cli.common import print_json, table

if TYPE_CHECKING:
    from dstack.service.fsck_report import Report

HELP = (
    "Verify the store and the pool hosts' caches: every blob hashes to its name (each is "
    "read and hashed), every manifest, snapshot, run record and tag event is valid and names "
    "only what exists; and list what killed processes left behind (temporary files in "
    "DSTACK_HOME, a local store and a host's ~/.dstack/blobs; environments in ~/.dstack/venvs "
    "whose build stopped half-way). Host paths are under the host's ~/.dstack."
    "\n\nExit status 1 when something is corrupt, missing, invalid or unchecked (a host that "
    "cannot be reached); 0 otherwise: leftovers alone are listed, and fine."
    "\n\n--repair removes the leftovers and a host's bad blobs (the next job uploads them "
    "again) and quarantines a local store's bad blobs (store/quarantine/); in a bucket it "
    "only reports them, since others may be reading: its owner removes them."
)


def register(app: typer.Typer) -> None:
    app.command(
        help=HELP, short_help="Verify the store and the hosts' caches; --repair what can be."
    )(fsck)


def fsck(
    repair: bool = typer.Option(
        False, "--repair", help="Remove leftovers and bad copies (never an object in a bucket)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings and counts as JSON"),
    no_hosts: bool = typer.Option(False, "--no-hosts", help="Leave the pool hosts out"),
    no_store: bool = typer.Option(False, "--no-store", help="Leave the store and DSTACK_HOME out"),
    stale_after: float | None = typer.Option(
        None,
        "--stale-after",
        min=0,
        metavar="SECONDS",
        help="A temporary file unchanged this long is left behind [default: 600, as for gc]",
    ),
) -> None:
    from dstack.cli.common import open_session
    from dstack.service.fsck import Options
    from dstack.service.fsck import fsck as check

    options = Options(repair, not no_store, not no_hosts, stale_after)
    with open_session() as session, _CountBar("verifying blobs") as bar:
        report = check(session, options, bar)
    if as_json:
        print_json(report.to_dict())
    elif report.findings:
        _tables(report)
    sys.stderr.write(report.summary() + "\n")
    if not repair and any(f.kind in REPAIRABLE for f in report.findings):
        sys.stderr.write("Hint: dstack fsck --repair removes leftovers and bad blobs.\n")
    if not report.ok:
        raise typer.Exit(1)


def _tables(report: Report) -> None:
    """One table per place (a store, DSTACK_HOME, a host), under a line naming it; long
    digests in paths are cut to their first 12 digits (--json has them whole)."""
    places: dict[str, list[list[str]]] = {}
    for f in report.findings:
        why = f"{f.reason}; {f.action}" if f.action else f.reason
        places.setdefault(f.place, []).append([f.kind, DIGEST.sub(_cut, f.path), why])
    for index, (place, rows) in enumerate(places.items()):
        sys.stdout.write(f"\n{place}:\n" if index else f"{place}:\n")
        table(["KIND", "PATH", "WHY"], rows, shrink=("WHY", "PATH"))


REPAIRABLE = ("corrupt", "leftover")
DIGEST = re.compile(r"[0-9a-f]{40,}")  # a blob's or snapshot's hash, not a time


def _cut(digest: re.Match[str]) -> str:
    return f"{digest[0][:12]}…"


class _CountBar:
    """A progress bar on stderr, on a terminal only, counting things (not bytes); the service
    calls ``expect`` with how many, then the bar once for each."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Any = None
        self.task: Any = None

    def expect(self, more: int) -> None:
        if not sys.stderr.isatty() or more == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.progress = Progress(*columns, transient=True, console=Console(stderr=True))
        self.task = self.progress.add_task(self.label, total=more)
        self.progress.start()

    def __call__(self, moved: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, moved)

    def __enter__(self) -> _CountBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
