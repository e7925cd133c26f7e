"""The one place a job and a run become final, used by the supervisor and by recovery alike."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import DstackError, describe
from dstack.execution.base import LOG, Executor, JobExit
from dstack.home import Home
from dstack.logs_setup import masker
from dstack.sharing import publish_run
from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.storage.manifest import Manifest, StatCache
from dstack.storage.store import Store, artifact_key

if TYPE_CHECKING:
    from dstack.backends.base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A job made final: its status, its sealed manifest, and whether its files are safe in
    the store (only then may its host's copy go)."""

    status: str
    manifest: Manifest | None
    files_safe: bool


def seal_artifacts(
    store: Store, executor: Executor, job: JobRecord, complete: bool, cache: StatCache
) -> tuple[str, Manifest] | None:
    """Store every artifact file of the job and write its manifest; partial when not complete
    (or take the manifest its host's agent sealed). Its key and the manifest, or None when the
    job declares no artifacts."""
    wf = job.job_spec
    if job.agent and job.job_dir:
        from dstack.runner.agents import AgentFailed, sealed_by_agent

        try:
            return sealed_by_agent(store, executor, job)
        except AgentFailed as e:  # its files are still on the host: saved from here
            log.warning("%s: %s; saving its files from this machine", job.workflow, e.message)
    if not wf.artifacts or not job.job_dir:
        return None
    paths = [a.path for a in wf.artifacts]
    entries = executor.collect(job.job_dir, paths, cache)
    key = artifact_key(job.run_name, job.workflow)
    manifest = Manifest(entries, "complete" if complete else "partial", paths)
    store.put_manifest(key, manifest)
    return key, manifest


def mirror_log(home: Home, executor: Executor, job: JobRecord) -> Path:
    """Copy what the local copy of a host job's log lacks; returns the local log's path."""
    local = home.job_dir(job.run_name, job.workflow) / LOG
    if job.job_dir and executor.local_path(job.job_dir) is None:
        local.parent.mkdir(parents=True, exist_ok=True)
        have = local.stat().st_size if local.exists() else 0
        data = executor.adopt(job.job_dir, job.pid or 0, job.pid_start).read_log(have)
        if data:
            with open(local, "ab") as out:
                out.write(data)
    return local


def finish_job(
    home: Home,
    state: State,
    store: Store,
    backend: Backend,
    executor: Executor,
    job: JobRecord,
    result: JobExit,
    stopped: bool,
    cache: StatCache,
) -> Finished:
    """Seal the artifacts and the log, then record the final status (the caller then lets
    the backend release the host). Whatever fails here (the store down, a full disk, an
    unreadable file) fails the job with the reason recorded, and its files are left where
    they are."""
    ok = result.code == 0 and not stopped
    problems: list[str] = []
    sealed: tuple[str, Manifest] | None = None
    try:
        sealed = seal_artifacts(store, executor, job, ok, cache)
    except (DstackError, OSError) as e:
        where = ""
        if job.job_dir and backend.own:
            on = "" if executor.local_path(job.job_dir) else f" on {executor.host_name()}"
            where = f"; its files are still in {job.job_dir}{on}"
        problems.append(f"its artifacts could not be saved: {describe(e)}{where}")
    try:
        mirror_log(home, executor, job)
    except (DstackError, OSError) as e:
        problems.append(f"its log could not be copied from the host: {describe(e)}")
    if job.agent and not stopped:  # a teammate, or this home without SSH, stopped it
        from dstack.runner.agents import stopped_through_store

        why = stopped_through_store(executor, job)
        if why:
            stopped, result = True, JobExit(result.code, why)
    return record_end(home, state, job, result, stopped, sealed, problems)


def record_end(
    home: Home,
    state: State,
    job: JobRecord,
    result: JobExit,
    stopped: bool,
    sealed: tuple[str, Manifest] | None,
    problems: list[str],
) -> Finished:
    """Record how the job ended, with what was sealed and what went wrong saving it."""
    ok = result.code == 0 and not stopped
    status = "done" if ok and not problems else "stopped" if stopped else "failed"
    reason = (
        None
        if ok
        else result.reason or ("stopped" if stopped else f"exited with code {result.code}")
    )
    error = masker(home)("; ".join([*([reason] if reason else []), *problems])) or None
    # Unsealed, a job keeps the manifest its artifacts were saved to while it ran, if any.
    sealed_key: dict[str, Any] = {"manifest": sealed[0]} if sealed else {}
    state.update_job(
        job.run_name,
        job.workflow,
        status=status,
        exit_code=result.code,
        finished_at=time.time(),
        error=error,
        **sealed_key,
    )
    if sealed:
        log.info("%s: sealed %d files as %s", job.workflow, len(sealed[1].entries), sealed[0])
    log.info("%s: %s%s", job.workflow, status, f" ({error})" if error else "")
    return Finished(status, sealed[1] if sealed else None, files_safe=not problems)


def saved_note(workflow: str, manifest: Manifest, store_url: str) -> str:
    """Where the job's artifacts went: the user should not have to guess."""
    from dstack.spec.sizes import format_size

    return (
        f"saved {len(manifest.entries)} files ({format_size(manifest.total_size)}) of "
        f"{workflow} to {store_url}"
        + ("" if manifest.state == "complete" else f" ({manifest.state})")
    )


def fail_pending(state: State, job: JobRecord, reason: str, status: str = "failed") -> None:
    state.update_job(
        job.run_name,
        job.workflow,
        only_if_active=True,
        status=status,
        finished_at=time.time(),
        error=reason,
    )


def finish_run(
    state: State, store: Store, run_name: str, target: str, stopped: bool
) -> tuple[str, int]:
    """Derive the run's status and exit code from its jobs; record them here and in the store."""
    jobs = state.jobs(run_name)
    statuses = {j.status for j in jobs}
    target_job = next(j for j in jobs if j.workflow == target)
    if stopped or "stopped" in statuses:
        status, code = "stopped", 130
    elif statuses <= {"done"}:
        status, code = "done", 0
    else:
        status = "failed"
        failed = [j for j in jobs if j.status == "failed"]
        codes = [j.exit_code for j in [target_job, *failed] if j.exit_code not in (None, 0)]
        code = codes[0] if codes else 1
    state.finish_run(run_name, status, code)
    try:
        publish_run(state, store, run_name)
    except (DstackError, OSError) as e:  # teammates see it late; this home has it all
        log.warning(
            "run %s ended, but its record could not be published: %s", run_name, describe(e)
        )
    return status, code
