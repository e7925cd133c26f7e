"""A job whose host is gone or silent (a cloud VM that powered itself off after its seal, a
server that is down or removed), finished from what its agent sealed in the store: its exit
code and reason, its sealed manifest, and its log, copied into this home's copy. Used by
recovery, so a laptop that slept through a job's end records it truthfully."""

from __future__ import annotations

import logging

from dstack.errors import DstackError, describe
from dstack.execution.base import LOG, JobExit
from dstack.home import Home
from dstack.runner.finish import Finished, record_end
from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.storage.joblogs import LogParts, read_status
from dstack.storage.manifest import Manifest
from dstack.storage.store import Store, artifact_key

log = logging.getLogger(__name__)


def finish_from_store(
    home: Home, state: State, store: Store, job: JobRecord, stopped: bool
) -> Finished | None:
    """Record the job as its agent sealed it; None when it has no agent or no seal (yet)."""
    if not job.agent:
        return None
    status = read_status(store.objects, job.run_name, job.workflow)
    if status is None or not status.sealed or status.exit_code is None:
        return None
    log.info(
        "%s: its host is out of reach; its agent sealed it (code %d)",
        job.workflow,
        status.exit_code,
    )
    problems: list[str] = []
    sealed: tuple[str, Manifest] | None = None
    if job.job_spec.artifacts:
        key = artifact_key(job.run_name, job.workflow)
        try:
            manifest = store.get_manifest(key)
            if manifest.state == "live":
                problems.append("its agent said sealed, but its manifest is still the live one")
            else:
                sealed = key, manifest
        except (DstackError, OSError) as e:
            problems.append(f"its sealed artifacts could not be read: {describe(e)}")
    try:
        _copy_log(home, store, job, status.log_parts)
    except (DstackError, OSError) as e:
        problems.append(f"its log could not be copied from the store: {describe(e)}")
    result = JobExit(status.exit_code, status.reason)
    # its agent stopped it on a request through the store (dstack.agent.stop)
    stopped = stopped or (status.reason or "").startswith("stopped by ")
    return record_end(home, state, job, result, stopped, sealed, problems)


def _copy_log(home: Home, store: Store, job: JobRecord, parts: int) -> None:
    """Append to this home's copy of the log what the store's log has beyond it (the copy
    made over SSH is the start of the same file)."""
    local = home.job_dir(job.run_name, job.workflow) / LOG
    local.parent.mkdir(parents=True, exist_ok=True)
    have = local.stat().st_size if local.exists() else 0
    at = 0
    with open(local, "ab") as out:
        for data in LogParts(store.objects, job.run_name, job.workflow).read_new(parts, more=False):
            if at + len(data) > have:
                out.write(data[max(0, have - at) :])
            at += len(data)
