"""`dstack fsck`: whether what dstack keeps is whole, and what killed processes left behind.

Blobs are verified on every read, so damage is found when someone needs the file, which can be
too late (a tag's only copy) and is never said for everyone to see. This walks it all at once:
the store (fsck_store: blobs, manifests, snapshots, run records, tag events), temporary files in
DSTACK_HOME and a local store (gc's rule), and each pool host's cache (fsck_hosts). With
``repair`` it removes leftovers and bad copies that can be fetched or built again: a host's bad
blob, a local store's bad blob (quarantined); never an object in a shared bucket, which others
may be reading (an object is never deleted on one reader's word).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.errors import SpecError
from dstack.service.fsck_report import LEFTOVER, Finding, Report

if TYPE_CHECKING:
    from dstack.service.session import Session
    from dstack.storage.objects import Meter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What to check: the store and DSTACK_HOME (``store``), the pool hosts (``hosts``);
    temporary files unchanged for ``stale_after`` seconds count as left behind."""

    repair: bool = False
    store: bool = True
    hosts: bool = True
    stale_after: float | None = None  # None: gc's TEMP_AGE


def fsck(session: Session, options: Options, progress: Meter | None = None) -> Report:
    """Check everything ``options`` name; the hosts are checked while the store is.
    ``progress`` is told the number of store blobs, then each one verified."""
    from dstack.service.fsck_hosts import check_host, kept_hosts
    from dstack.service.fsck_store import check_store
    from dstack.service.gc import TEMP_AGE

    if not (options.store or options.hosts):
        raise SpecError(
            "Nothing to check: --no-store and --no-hosts leave nothing.",
            hint="leave one out: dstack fsck --no-hosts checks only the store",
        )
    stale = TEMP_AGE if options.stale_after is None else options.stale_after
    hosts = kept_hosts(session) if options.hosts else []  # the state is read in this thread
    report = Report()
    if options.hosts:
        report.checked["hosts"] = len(hosts)
    with ThreadPoolExecutor(max(1, min(8, len(hosts)))) as workers:
        checking = [workers.submit(check_host, h, stale, options.repair) for h in hosts]
        if options.store:
            report.add(_temp_files(session, stale, options.repair))
            report.add(check_store(session.store, options.repair, progress))
        for done in checking:
            report.add(done.result())
    for f in report.findings:
        log.info("fsck: %s at %s %s: %s %s", f.kind, f.place, f.path, f.reason, f.action)
    log.info("fsck: %s", report.summary())
    return report


def _temp_files(session: Session, stale: float, repair: bool) -> Report:
    """Temporary files killed processes left in DSTACK_HOME and a local store (gc's rule)."""
    from dstack.service.gc import sweep_temp_files

    report = Report()
    for path in sweep_temp_files(session, dry_run=not repair, older_than=stale).paths:
        place, rel = _where(session, path)
        reason = "temporary file of a killed process"
        report.findings.append(Finding(LEFTOVER, place, rel, reason, "removed" if repair else ""))
    return report


def _where(session: Session, path: Path) -> tuple[str, str]:
    """(place, path under it) for a file in DSTACK_HOME or in a local store outside it."""
    from dstack.storage.objects import LocalObjectStore

    home, objects = session.home.root, session.store.objects
    if path.is_relative_to(home):
        return "DSTACK_HOME", str(path.relative_to(home))
    if isinstance(objects, LocalObjectStore) and path.is_relative_to(objects.root):
        return objects.url, str(path.relative_to(objects.root))
    return "", str(path)
