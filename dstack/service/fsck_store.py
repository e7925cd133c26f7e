"""The store's half of `dstack fsck`: every blob hashes to its key; every manifest and snapshot
parses and names only blobs the store has (each chunk of a chunked file); every run record
and tag event is valid and names only manifests the store has.

Everything is read as a teammate's home reads it: untrusted, checked by the same functions
(Manifest.from_json, record_problem, event_problem) before anything in it is used.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dstack.errors import StoreError
from dstack.service.fsck_report import CORRUPT, INVALID, MISSING, UNCHECKED, Finding, Report
from dstack.spec.names import shown

if TYPE_CHECKING:
    from dstack.storage.manifest import Manifest
    from dstack.storage.objects import Meter, ObjectStore
    from dstack.storage.store import Store

BLOB_KEY = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{62})")
SNAPSHOT_KEY = re.compile(r"snapshots/([0-9a-f]{64})\.json")
MANIFEST_KEY = re.compile(r"manifests/[^/]+/[^/]+\.json")
KEPT_IN_BUCKET = "kept: an object others may read is removed by the bucket's owner, not fsck"


def check_store(store: Store, repair: bool, progress: Meter | None = None) -> Report:
    """Check the whole store; with ``repair`` a local store's bad blobs are quarantined.

    Things are listed in the reverse of the order writers write them (a run record or tag
    event after its manifests, a manifest after its blobs): what a run saves meanwhile is
    never taken for missing."""
    check = _StoreCheck(store.objects)
    records = check.records()
    manifest_keys, manifests = check.manifests()
    blobs = check.list_blobs()
    for key, named in records:
        for job, wanted in sorted(named.items()):
            if wanted not in manifest_keys:
                check.found(MISSING, key, f"job {job} lacks its manifest {shown(wanted)}")
    for key, manifest in manifests:
        check.names_blobs(key, manifest, blobs)
    check.blobs(blobs, repair, progress)
    return check.report


class _StoreCheck:
    """One pass over one store, its findings gathered in ``report``."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.report = Report()
        self.users: dict[str, set[str]] = defaultdict(set)  # blob -> manifests naming it

    def found(self, kind: str, key: str, reason: str, action: str = "") -> None:
        self.report.findings.append(Finding(kind, self.objects.url, key, reason, action))

    def records(self) -> list[tuple[str, dict[str, str]]]:
        """The valid run records and tag events: each one's key and the manifests it names
        (job -> key); one that is not valid (record_problem, event_problem) is a finding."""
        from dstack.sharing import record_problem
        from dstack.tags import event_problem

        runs = {k for k in self.objects.keys("runs/") if k.endswith(".json")}
        events = self.objects.keys("tags/")
        self.report.checked["records"] += len(runs) + len(events)
        valid = []
        for key, raw in self._read_all([*sorted(runs), *events]):
            what, problem = (
                ("run record", record_problem) if key in runs else ("tag event", event_problem)
            )
            data, why = _parsed(key, raw, problem)
            if why is None:
                valid.append((key, data["manifests"]))
            else:
                self.found(INVALID, key, f"the {what} {why}")
        return valid

    def manifests(self) -> tuple[set[str], list[tuple[str, Manifest]]]:
        """The keys of manifests, and the manifests and snapshots that parse; a snapshot
        whose content does not hash to its name, or one that does not parse, is a finding."""
        from dstack.storage.manifest import Manifest

        keys = self.objects.keys("manifests/")
        snapshots = self.objects.keys("snapshots/")
        self.report.checked["manifests"] += len(keys) + len(snapshots)
        parsed = []
        for key, raw in self._read_all([*keys, *snapshots]):
            named = SNAPSHOT_KEY.fullmatch(key) if key.startswith("snapshots/") else None
            if not (named or MANIFEST_KEY.fullmatch(key)):
                self.found(INVALID, key, "not named like a manifest (RUN/JOB.json, DIGEST.json)")
            elif named and hashlib.sha256(raw).hexdigest() != named[1]:
                self.found(CORRUPT, key, "the snapshot's content does not hash to its name")
            else:
                try:
                    parsed.append((key, Manifest.from_json(raw)))
                except StoreError as e:
                    self.found(INVALID, key, e.message.rstrip("."))
        return set(keys), parsed

    def list_blobs(self) -> dict[str, str]:
        """The store's blobs, hash -> key; a key that names no hash is a finding."""
        blobs = {}
        for key in self.objects.keys("blobs/"):
            named = BLOB_KEY.fullmatch(key)
            if named:
                blobs[named[1] + named[2]] = key
            else:
                self.found(INVALID, key, "not a blob: its key names no sha256 digest")
        return blobs

    def names_blobs(self, key: str, manifest: Manifest, blobs: dict[str, str]) -> None:
        """Each file of the manifest under ``key`` has its blob (each chunk) in ``blobs``."""
        for entry in manifest.entries:
            if entry.link is not None:
                continue
            parts = entry.chunks or (entry.sha256,)
            for sha in parts:
                self.users[sha].add(key)
            lacking = [sha for sha in parts if sha not in blobs]
            if not lacking:
                continue
            if entry.chunks is None:
                why = f"its blob {entry.sha256[:12]}…"
            else:
                why = f"{len(lacking)} of its {len(parts)} chunks"
            self.found(MISSING, key, f"{shown(entry.path)} lacks {why}")

    def blobs(self, blobs: dict[str, str], repair: bool, progress: Meter | None) -> None:
        """Hash every blob, on the store's threads; a bad one is quarantined with ``repair``
        where the store does that (a local one; never a shared bucket)."""
        todo = sorted(blobs.items())
        self.report.checked["blobs"] += len(todo)
        if progress is not None:
            progress.expect(len(todo))

        def digest(item: tuple[str, str]) -> str | StoreError:
            try:
                hashed = hashlib.sha256()
                for piece in self.objects.open_read(item[1]):
                    hashed.update(piece)
                return hashed.hexdigest()
            except StoreError as e:  # gone meanwhile, or unreadable
                return e
            finally:
                if progress is not None:
                    progress(1)

        with ThreadPoolExecutor(self.objects.parallelism) as pool:
            for (sha, key), got in zip(todo, pool.map(digest, todo), strict=True):
                if isinstance(got, StoreError):
                    self.found(UNCHECKED, key, got.message.rstrip("."))
                elif got != sha:
                    self._corrupt(sha, key, got, repair)

    def _corrupt(self, sha: str, key: str, got: str, repair: bool) -> None:
        users = len(self.users.get(sha, ()))
        named = {0: "", 1: "; a manifest names it"}.get(users, f"; {users} manifests name it")
        action = ""
        if repair:
            aside = self.objects.quarantine(key)
            action = f"quarantined to {aside}" if aside else KEPT_IN_BUCKET
        self.found(CORRUPT, key, f"content hashes to {got[:12]}…{named}", action)

    def _read_all(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        """Each key's bytes, read on the store's threads; one unreadable is a finding."""

        def read(key: str) -> bytes | StoreError:
            try:
                return self.objects.get_bytes(key)
            except StoreError as e:
                return e

        with ThreadPoolExecutor(self.objects.parallelism) as pool:
            for key, raw in zip(keys, pool.map(read, keys), strict=True):
                if isinstance(raw, StoreError):
                    self.found(UNCHECKED, key, raw.message.rstrip("."))
                else:
                    yield key, raw


def _parsed(
    key: str, raw: bytes, problem: Callable[[str, Any], str | None]
) -> tuple[Any, str | None]:
    """The JSON record under ``key`` and what ``problem`` finds wrong with it (None: nothing)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "is not valid JSON"
    return data, problem(key, data)
