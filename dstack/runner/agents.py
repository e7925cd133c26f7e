"""The laptop's side of a job's host agent (dstack.agent): starting it with upload rights for
the run's own keys, watching that it keeps running, and taking the manifest it sealed.

Where the agent cannot be used (a `file://` store, a store that cannot scope rights, a host
without python3 or without a way to the store) the job's data goes through this machine as
before, and the run says why.

Any home sharing the store can also ask an agent to stop its job through the store
(request_stop; dstack.agent.stop), for when the host cannot be reached over SSH.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dstack.agent.config import SEAL_GRACE, AgentConfig
from dstack.agent.keys import job_prefix, status_key, stop_key
from dstack.agent.stop import WHO_MAX, StopRequest
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
    try:  # without it the job can still be stopped over SSH
        stop_url = store.objects.download_url(stop_key(run, job), GRANT_SECONDS)
    except DstackError as e:
        log.warning("%s: no stop requests through %s: %s", job, store.url, e.message)
        stop_url = None
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
        stop_url=stop_url,
    )
    try:
        why_not = ex.start_agent(job_dir, config)
    except (DstackError, OSError) as e:
        why_not = f"its agent could not start: {describe(e)}"
    if why_not:
        log.info("%s: no agent on %s: %s", job, ex.host_name(), why_not)
    return why_not is None, why_not


class AgentWatch:
    """Looks at running jobs' agents every few seconds: starts one again when it is gone (it
    resumes), and tells the user once when the store stops taking a job's data."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.next_look: dict[str, float] = {}
        self.buffering: set[str] = set()
        self.stopping: set[str] = set()

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
        by = _who(seen.status.get("stopped_by"))
        if by is not None and job.workflow not in self.stopping:
            self.stopping.add(job.workflow)
            self.note(f"{job.workflow}: stopped by {by} through the store; its agent stops it")


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


def _who(value: object) -> str | None:
    """The name of who stopped a job, as its host says (checked: it comes from the host)."""
    if isinstance(value, str) and 0 < len(value) <= WHO_MAX and value.isprintable():
        return value
    return None


def stopped_through_store(ex: Executor, job: JobRecord) -> str | None:
    """Why the job ended ("stopped by WHO") when its agent stopped it on a request through
    the store, else None: the job then ends as stopped, as if stopped from here."""
    if not job.agent or not job.job_dir:
        return None
    try:
        seen = ex.agent_status(job.job_dir)
    except (DstackError, OSError):
        return None
    by = _who(seen.status.get("stopped_by"))
    return f"stopped by {by}" if by else None


def request_stop(store: Store, run: str, job: str, abort: bool) -> None:
    """Ask the job's agent to stop it, through the store (it looks every few seconds)."""
    from dstack.tags import who

    request = StopRequest(who()[:WHO_MAX], abort, time.time())
    store.objects.put_bytes(stop_key(run, job), request.to_json())


def agent_jobs(store: Store, run: str) -> list[str]:
    """The run's jobs whose agents write to the store: those a stop request reaches."""
    from dstack.spec.names import name_problem

    prefix = f"jobs/{run}/"
    found = set()
    for key in store.objects.keys(prefix):
        job, _, rest = key[len(prefix) :].partition("/")
        if rest == "status.json" and not name_problem(job):
            found.add(job)
    return sorted(found)


def stored_state(store: Store, run: str, job: str) -> tuple[str, str | None, int | None]:
    """(state, reason, exit code) of the job as its agent last wrote them to the store;
    ("", None, None) when there is none or it is not valid (anyone with write access to the
    bucket could have written it)."""
    import json

    found = store.objects.read_versioned(status_key(run, job))
    try:
        data = json.loads(found[0]) if found else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return "", None, None
    reason, code = data.get("reason"), data.get("exit_code")
    shown = reason[:300] if isinstance(reason, str) and reason.isprintable() else None
    return data["state"][:30], shown, code if type(code) is int else None
