"""The laptop's side of a job's host agent (dstack.agent): starting it with upload rights for
the run's own keys, watching that it keeps running, and taking the manifest it sealed.

Where the agent cannot be used (a `file://` store, a store that cannot scope rights, a host
without python3 or without a way to the store) the job's data goes through this machine as
before, and the run says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dstack.agent.config import SEAL_GRACE, AgentConfig
from dstack.agent.keys import job_prefix
from dstack.errors import DstackError, describe
from dstack.execution.base import Executor, JobHandle
from dstack.spec.jobspec import JobSpec
from dstack.state.records import JobRecord
from dstack.storage.manifest import Manifest
from dstack.storage.store import Store, artifact_key

GRANT_SECONDS = 7 * 24 * 3600  # the longest a signed S3 upload policy may live (SigV4)
WATCH_EVERY = 5.0  # seconds between looks at a running job's agent
SEAL_WAIT_MARGIN = 60.0  # beyond the agent's own seal grace
NOTE_AFTER = 2.0  # seconds of waiting for a seal before the user is told

log = logging.getLogger(__name__)


class AgentFailed(DstackError):
    """The agent could not seal the job: this machine saves its files instead."""


def start_agent(
    store: Store,
    ex: Executor,
    run: str,
    job: str,
    spec: JobSpec,
    handle: JobHandle,
    job_dir: str,
) -> tuple[bool, str | None]:
    """Start the agent next to a started job: (whether the host writes the job's data to the
    store itself, and when not, why, for the user; None when there is nothing to say)."""
    if not ex.runs_agents or not store.direct or not store.objects.remote:
        return False, None
    scopes = ["blobs/", job_prefix(run, job), artifact_key(run, job)]
    try:
        grants = store.objects.upload_grants(scopes, GRANT_SECONDS)
    except DstackError as e:
        return False, f"{store.url} gave no upload rights: {e.message}"
    if grants is None:
        return False, f"{store.url} cannot give a host upload rights for one run only"
    config = AgentConfig(
        run=run,
        job=job,
        host=ex.host_name(),
        store_url=store.url,
        manifest=artifact_key(run, job),
        pid=handle.pid,
        pid_start=handle.pid_start,
        known_blobs="",  # the executor puts it in the host's dstack folder
        artifacts=[a.path for a in spec.artifacts],
        mounts=[a.path for a in spec.artifacts if a.mount],
        grants=grants,
    )
    try:
        why_not = ex.start_agent(job_dir, config)
    except (DstackError, OSError) as e:
        why_not = f"its agent could not start: {describe(e)}"
    if why_not:
        log.warning("%s: no agent on %s: %s", job, ex.host_name(), why_not)
    return why_not is None, why_not


class AgentWatch:
    """Looks at running jobs' agents every few seconds: starts one again when it is gone (it
    resumes), and tells the user once when the store stops taking a job's data."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.next_look: dict[str, float] = {}
        self.buffering: set[str] = set()

    def look(self, ex: Executor, job: JobRecord) -> None:
        now = time.monotonic()
        if not job.job_dir or now < self.next_look.get(job.workflow, 0.0):
            return
        self.next_look[job.workflow] = now + WATCH_EVERY
        try:
            seen = ex.agent_status(job.job_dir)
            if not seen.alive and seen.state not in ("sealed", "seal-failed"):
                log.warning("%s: its agent is gone; starting it again", job.workflow)
                ex.ensure_agent(job.job_dir)
        except (DstackError, OSError) as e:  # the host does not answer now: the next look
            log.info("%s: could not look at its agent: %s", job.workflow, describe(e))
            return
        if seen.state == "buffering" and job.workflow not in self.buffering:
            self.buffering.add(job.workflow)
            self.note(
                f"{job.workflow}: {ex.host_name()} cannot write to the store now "
                f"({seen.status.get('reason')}); its agent keeps the data on the host and "
                "retries"
            )
        elif seen.state == "running":
            self.buffering.discard(job.workflow)


def sealed_by_agent(
    store: Store, ex: Executor, job: JobRecord, note: Callable[[str], None] | None = None
) -> tuple[str, Manifest] | None:
    """Wait for the job's agent to seal it; the manifest it sealed (None when the job has no
    artifacts). AgentFailed when it could not: the caller saves the files itself."""
    assert job.job_dir
    deadline = time.monotonic() + SEAL_GRACE + SEAL_WAIT_MARGIN
    started, restarted, told = time.monotonic(), False, False
    while True:
        seen = ex.agent_status(job.job_dir)
        if seen.state == "sealed":
            break
        if seen.state == "seal-failed":
            raise AgentFailed(f"its agent could not seal it: {seen.status.get('reason')}")
        if not seen.alive:
            if restarted:
                raise AgentFailed("its agent ended without sealing it")
            ex.ensure_agent(job.job_dir)
            restarted = True
        if time.monotonic() > deadline:
            raise AgentFailed("its agent did not seal it in time")
        if note and not told and time.monotonic() - started > NOTE_AFTER:
            told = True
            note(f"waiting for {ex.host_name()} to save {job.workflow}'s artifacts to {store.url}")
        time.sleep(0.1)
    if not job.job_spec.artifacts:
        return None
    key = artifact_key(job.run_name, job.workflow)
    manifest = store.get_manifest(key)
    if manifest.state == "live":
        raise AgentFailed("its agent said sealed, but its manifest is still the live one")
    return key, manifest
