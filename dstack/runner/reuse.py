"""Reusing an up-to-date job: the key that says two jobs would do the same work, and taking
an earlier job's result when its saved files are all still in the store."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.storage.manifest import Manifest
from dstack.storage.store import Store


def cache_key(snapshot_digest: str, spec: dict[str, Any], inputs: Iterable[Manifest]) -> str:
    """Same code, same validated spec, same input files: same key."""
    material = {
        "snapshot": snapshot_digest,
        "spec": spec,
        "inputs": sorted(m.digest() for m in inputs),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def reuse_earlier(
    state: State, store: Store, job: JobRecord, key: str, note: Callable[[str], None]
) -> bool:
    """Mark the job done with the result of the latest finished job of the same key; False
    when there is none, or when some of its saved files are gone from the store."""
    earlier = state.cached_job(key)
    if earlier is None:
        return False
    lost = lost_blobs(store, earlier.manifest)
    if lost:  # e.g. a corrupt blob was quarantined: running it again stores them again
        note(
            f"{job.workflow} is up to date, but {lost} of its saved files are missing "
            f"from the store: running it again"
        )
        return False
    now = time.time()
    state.update_job(
        job.run_name,
        job.workflow,
        status="done",
        exit_code=0,
        started_at=now,
        finished_at=now,
        cache_key=key,
        reused_from=f"{earlier.run_name}/{earlier.workflow}",
        manifest=earlier.manifest,
        record=earlier.record,
    )
    note(f"{job.workflow} is up to date, reusing run {earlier.run_name} (--no-cache re-runs it)")
    return True


def lost_blobs(store: Store, manifest_key: str | None) -> int:
    """How many blobs of an earlier job's artifacts the store no longer has."""
    if manifest_key is None:
        return 0
    entries = store.get_manifest(manifest_key).entries
    wanted = {c for e in entries if e.link is None for c in (e.chunks or (e.sha256,))}
    return len(store.blobs.missing(wanted))
