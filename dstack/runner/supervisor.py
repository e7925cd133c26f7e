"""The supervisor: one per run; owns every job's lifecycle from start to sealed artifacts.

It starts jobs when their upstream jobs are done (independent ones in parallel), reuses
up-to-date upstream jobs, streams logs, saves `mount: true` artifacts while jobs run, seals
manifests, honours stop requests and Ctrl-C, and records the final statuses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from dstack import secrets
from dstack.backends.ledger import Ledger, StackRecord
from dstack.backends.teardown import teardown
from dstack.config import CloudLimits, cloud_limits
from dstack.errors import DstackError, ResourceError, describe
from dstack.execution import procs
from dstack.execution.base import LOG, Executor, JobExit, JobHandle
from dstack.execution.factory import executor_of_job, ssh_executor
from dstack.home import Home
from dstack.logs_setup import masker, run_log, run_log_path
from dstack.pool import Pool
from dstack.providers.base import HostContext, get_provider
from dstack.runner.finish import fail_pending, finish_job, finish_run, mirror_log
from dstack.runner.inputs import Input, external_inputs, upstream_inputs
from dstack.runner.logs import LogReader, format_line
from dstack.runner.placement import candidates, fitting, unreachable
from dstack.runner.ports import announce, forward_ports, save_access
from dstack.sharing import open_tags, tag_run
from dstack.spec.jobspec import JobSpec
from dstack.spec.sizes import format_size
from dstack.ssh.forward import Forwards
from dstack.state.db import State
from dstack.state.records import JobRecord, RunRecord
from dstack.storage.manifest import Manifest, StatCache
from dstack.storage.store import Store, artifact_key
from dstack.storage.tree import final_tree

LIVE_SYNC_INTERVAL = 0.5
DOWN_FOR = 30.0  # an unreachable pool host is tried again after this many seconds

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """SIGTERM or a `dstack stop` arrived."""


@dataclass
class Running:
    job: JobRecord
    spec: JobSpec
    handle: JobHandle
    executor: Executor
    log: LogReader = field(default_factory=LogReader)
    last_sync: float = 0.0
    live_json: bytes = b""


class Supervisor:
    def __init__(
        self,
        home: Home,
        state: State,
        store: Store,
        executor: Executor,
        run_name: str,
        out: TextIO | None,
        notes: TextIO | None,
        no_cache: bool = False,
    ) -> None:
        self.home, self.state, self.store, self.executor = home, state, store, executor
        self.run_name, self.out, self.notes, self.no_cache = run_name, out, notes, no_cache
        self.running: dict[str, Running] = {}
        self.cache = StatCache()
        self.stopping: str | None = None
        self.prefix_lines = len(state.jobs(run_name)) > 1
        self.forwards = Forwards()
        self.opened: list[Executor] = []
        self.creating: dict[str, Future[Executor]] = {}  # cloud hosts being created, by job
        self.threads: ThreadPoolExecutor | None = None
        self.down: dict[str, float] = {}  # unreachable pool hosts: when to try each again
        self.sync_failing: set[str] = set()  # jobs whose live sync fails (warned once)

    # the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        run = self.state.run(self.run_name)
        self.state.update_run(
            self.run_name,
            status="running",
            supervisor_pid=os.getpid(),
            supervisor_start=procs.start_time(os.getpid()),
        )
        log.info("supervisor %d runs %s (target %s)", os.getpid(), self.run_name, run.workflow)
        self._adopt_running()
        crash: BaseException | None = None
        try:
            self._loop(run)
        except (KeyboardInterrupt, StopRequested):
            self._stop_all(abort=self.stopping == "abort")
        except BaseException as e:  # recorded as the jobs' failure, then raised again
            crash, failure = e, self._failure(e)
            log.error("run %s failed: %s", self.run_name, failure, extra={"file_only": True})
            self._stop_all(abort=True, failure=failure)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.forwards.close()
            self._await_creating()
            for executor in self.opened:
                executor.close()
            for stack in Ledger(self.state).all(self.run_name):  # jobs that never started
                if stack.status != "leaked":  # a failed teardown is left to `dstack gc`
                    teardown(self.home, self.state, stack.name, self._note)
        status, code = finish_run(
            self.state, self.store, self.run_name, run.workflow, self.stopping is not None
        )
        log.info("run %s %s (exit code %d)", self.run_name, status, code)
        if crash is not None:
            raise crash
        if status == "done" and run.tag:
            self._tag(run.tag)
        return code

    def _failure(self, error: BaseException) -> str:
        """The reason recorded on the jobs when the supervisor itself fails (secrets masked)."""
        if isinstance(error, DstackError | OSError):
            return masker(self.home)(f"dstack could not go on: {describe(error)}")
        return masker(self.home)(
            f"unexpected error in dstack: {type(error).__name__}: {error} "
            f"(details in {run_log_path(self.home, self.run_name)})"
        )

    def _adopt_running(self) -> None:
        """Take over jobs an earlier supervisor of this run started (a resumed run)."""
        for job in self.state.jobs(self.run_name):
            if job.status == "running" and job.pid and job.job_dir:
                ex = self._keep(executor_of_job(self.home, self.store, self.state, job.record))
                log = self.home.job_dir(self.run_name, job.workflow) / LOG
                offset = log.stat().st_size if log.exists() else 0
                handle = ex.adopt(job.job_dir, job.pid, job.pid_start)
                self.running[job.workflow] = Running(
                    job, JobSpec.from_dict(job.spec), handle, ex, LogReader(offset)
                )

    def _keep(self, executor: Executor) -> Executor:
        """Remember a host executor so its connection is closed when the run ends."""
        self.opened.append(executor)
        return executor

    def _loop(self, run: RunRecord) -> None:
        idle = 0.005
        last_check = 0.0
        while True:
            now = time.monotonic()
            if now - last_check > 0.2:
                last_check = now
                request = self.state.run(self.run_name).stop_request
                if request:
                    self.stopping = request
                    raise StopRequested
            jobs = {j.workflow: j for j in self.state.jobs(self.run_name)}
            progressed = self._start_ready(jobs, run.workflow)
            for name in list(self.running):
                progressed |= self._pump(self.running[name])
            if not self.running and all(j.finished for j in self.state.jobs(self.run_name)):
                return
            idle = 0.005 if progressed else min(idle * 2, 0.1)
            time.sleep(idle)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping is None:
            self.stopping = "stop"
            raise StopRequested

    # starting ---------------------------------------------------------------------------

    def _start_ready(self, jobs: dict[str, JobRecord], target: str) -> bool:
        started = False
        for job in jobs.values():
            if job.status not in ("submitted", "waiting") or job.workflow in self.running:
                continue
            if job.workflow in self.creating and not self.creating[job.workflow].done():
                continue  # its host is being created
            ups = [jobs[u] for u in job.upstream]
            if any(u.status in ("failed", "stopped") for u in ups):
                fail_pending(
                    self.state,
                    job,
                    "an upstream job did not succeed: "
                    + ", ".join(u.workflow for u in ups if u.status != "done"),
                )
                started = True
            elif all(u.status == "done" for u in ups):
                started |= self._start(
                    job, upstream_inputs(jobs, job.upstream), job.workflow == target
                )
        return started

    def _start(self, job: JobRecord, inputs: list[Input], is_target: bool) -> bool:
        """Start, reuse or fail the job; False when it is left waiting for a host."""
        spec = JobSpec.from_dict(job.spec)
        run = self.state.run(self.run_name)
        try:
            tags = open_tags(self.state, self.store)
            inputs = inputs + external_inputs(self.state, tags, spec)
            manifests = {i.manifest: self.store.get_manifest(i.manifest) for i in inputs}
            key = self._cache_key(run, job, manifests)
            if not is_target and not self.no_cache and self._reuse(job, key):
                return True
            return self._launch(run, job, spec, inputs, manifests, key)
        except (DstackError, OSError) as e:  # a job that cannot start fails alone, with the reason
            reason = masker(self.home)(describe(e))
            fail_pending(self.state, job, f"could not start: {reason}")
            self._note(f"{job.workflow} could not start: {reason}")
            return True

    def _cache_key(self, run: RunRecord, job: JobRecord, manifests: dict[str, Manifest]) -> str:
        material = {
            "snapshot": run.snapshot["digest"],
            "spec": job.spec,
            "inputs": sorted(m.digest() for m in manifests.values()),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def _reuse(self, job: JobRecord, key: str) -> bool:
        earlier = self.state.cached_job(key)
        if earlier is None:
            return False
        lost = self._lost_blobs(earlier.manifest)
        if lost:  # e.g. a corrupt blob was quarantined: running it again stores them again
            self._note(
                f"{job.workflow} is up to date, but {lost} of its saved files are missing "
                f"from the store: running it again"
            )
            return False
        self.state.update_job(
            self.run_name,
            job.workflow,
            status="done",
            exit_code=0,
            started_at=time.time(),
            finished_at=time.time(),
            cache_key=key,
            reused_from=f"{earlier.run_name}/{earlier.workflow}",
            manifest=earlier.manifest,
            record=earlier.record,
        )
        self._note(
            f"{job.workflow} is up to date, reusing run {earlier.run_name} (--no-cache re-runs it)"
        )
        return True

    def _lost_blobs(self, manifest_key: str | None) -> int:
        """How many blobs of an earlier job's artifacts the store no longer has."""
        if manifest_key is None:
            return 0
        entries = self.store.get_manifest(manifest_key).entries
        wanted = {c for e in entries if e.link is None for c in (e.chunks or (e.sha256,))}
        return len(self.store.blobs.missing(wanted))

    def _place(self, run: RunRecord, job: JobRecord, spec: JobSpec) -> Executor | None:
        """The executor of the job's cloud host, or of the first fitting own host with a free
        slot; None while all are busy or the cloud host is being created."""
        stack = Ledger(self.state).of_job(self.run_name, job.workflow)
        if stack is not None:
            return self._cloud_host(run, job, stack)
        wants_gpu = bool(spec.resources.gpu and spec.resources.gpu.count)
        fits = fitting(spec, candidates(self.home, self.state, run.placement, wants_gpu))
        busy: list[str] = []
        for candidate in fits:
            if candidate.host is None:
                return self.executor
            if self.down.get(candidate.name, 0.0) > time.monotonic():
                continue
            if not Pool(self.state).claim(candidate.host, self.run_name, job.workflow):
                busy.append(candidate.name)
                continue
            why = unreachable(candidate.host)
            if why is None:
                return self._keep(ssh_executor(self.home, self.store, self.state, candidate.name))
            Pool(self.state).release(self.run_name, job.workflow)
            self.down[candidate.name] = time.monotonic() + DOWN_FOR
            log.warning("pool host %s is unreachable (%s); trying the others", candidate.name, why)
        if not busy:
            raise ResourceError(
                f"No host that fits workflow '{spec.name}' answers: "
                + ", ".join(c.name for c in fits),
                hint="see `dstack pool list`; start the host again, or remove it from the pool",
            )
        self._wait(run, job, "a free host", ", ".join(busy) + " busy")
        return None

    def _cloud_host(self, run: RunRecord, job: JobRecord, stack: StackRecord) -> Executor | None:
        """Create the job's VM in a thread of its own (minutes, during which the other jobs'
        logs and artifacts keep flowing); its executor once it answers over SSH."""
        creating = self.creating.get(job.workflow)
        if creating is None:
            limits = cloud_limits(self.home).get(stack.backend, CloudLimits())
            if not Ledger(self.state).claim(stack.name, limits.max_instances):
                self._wait(
                    run,
                    job,
                    f"a free {stack.backend} instance",
                    f"all {limits.max_instances} of {stack.backend}'s max_instances in use",
                )
                return None
            from dstack.runner.clouds import provision

            if self.threads is None:
                self.threads = ThreadPoolExecutor(thread_name_prefix="provision")
            self.creating[job.workflow] = self.threads.submit(
                provision, self.home, self.store, stack, self._note
            )
            self.state.update_job(
                self.run_name, job.workflow, status="waiting", error="waiting for its cloud host"
            )
            return None
        if not creating.done():
            return None
        del self.creating[job.workflow]
        return self._keep(creating.result())

    def _wait(self, run: RunRecord, job: JobRecord, what: str, why: str) -> None:
        """Mark the job waiting for ``what`` (or fail it under --no-wait)."""
        if run.placement.get("no_wait"):
            raise ResourceError(f"{why}, and --no-wait was given")
        if job.status != "waiting":
            self.state.update_job(
                self.run_name, job.workflow, status="waiting", error=f"waiting for {what}: {why}"
            )
            self._note(f"{job.workflow} is waiting for {what} ({why})")

    def _launch(
        self,
        run: RunRecord,
        job: JobRecord,
        spec: JobSpec,
        inputs: list[Input],
        manifests: dict[str, Manifest],
        key: str,
    ) -> bool:
        try:
            ex = self._place(run, job, spec)
            if ex is None:
                return False
            log.info("%s: placed on %s (%s)", job.workflow, ex.host_name(), ex.backend)
            self._launch_on(ex, run, job, spec, inputs, manifests, key)
            started = self.running[job.workflow]
            log.info(
                "%s: started, pid %s in %s", job.workflow, started.handle.pid, started.job.job_dir
            )
            return True
        except BaseException:
            Pool(self.state).release(self.run_name, job.workflow)
            self._teardown(job.workflow)
            raise

    def _launch_on(
        self,
        ex: Executor,
        run: RunRecord,
        job: JobRecord,
        spec: JobSpec,
        inputs: list[Input],
        manifests: dict[str, Manifest],
        key: str,
    ) -> None:
        provider = get_provider(spec.provider)
        provider.check_host(spec, ex.which)
        job_dir = ex.job_dir(self.run_name, job.workflow)
        snapshot = self.store.get_manifest(run.snapshot["key"]).entries
        # The job's whole tree is checked before any of it is written (links across inputs).
        tree = final_tree([snapshot, *(manifests[item.manifest].entries for item in inputs)])
        ex.place(job_dir, tree)
        files = {e.path: e.sha256 for e in tree}
        ex.make_dirs(job_dir, [a.path for a in spec.artifacts])
        ports = ex.free_ports(max(spec.ports, provider.ports))
        env = {k: (v if v is not None else os.environ.get(k, "")) for k, v in spec.env.items()}
        env |= {
            "DSTACK_RUN": self.run_name,
            "DSTACK_WORKFLOW": job.workflow,
            "PYTHONUNBUFFERED": "1",
            **{f"PORT_{i}": str(port) for i, port in enumerate(ports)},
            **secrets.job_env(self.home),
        }
        env |= provider.job_env(spec, files)
        masked = [*env.get("DSTACK_MASK_VARS", "").split(), *provider.masked]
        env["DSTACK_MASK_VARS"] = " ".join(masked)
        script = provider.script(spec, HostContext(ex.venv_cache()))
        handle = ex.start(job_dir, spec.working_dir or ".", script, env)
        if ports:
            access = save_access(self.home, self.run_name, job.workflow, provider.url_path(env))
            self._open_ports(job.workflow, ex, ports, access)
        record = {
            "commit": run.snapshot.get("commit"),
            "branch": run.snapshot.get("branch"),
            "dirty_hash": run.snapshot.get("dirty_hash"),
            "snapshot": run.snapshot["digest"],
            "variables": run.variables,
            "run_args": run.args,
            "provider": spec.provider,
            "backend": ex.backend,
            "host": ex.host_name(),
            "ports": ports,
            "inputs": [
                {
                    "source": i.source,
                    "manifest": i.manifest,
                    "digest": manifests[i.manifest].digest(),
                }
                for i in inputs
            ],
        }
        self.state.update_job(
            self.run_name,
            job.workflow,
            status="running",
            started_at=time.time(),
            pid=handle.pid,
            pid_start=handle.pid_start,
            job_dir=job_dir,
            cache_key=key,
            record=record,
        )
        fresh = next(j for j in self.state.jobs(self.run_name) if j.workflow == job.workflow)
        self.running[job.workflow] = Running(fresh, spec, handle, ex)

    def _open_ports(self, workflow: str, ex: Executor, ports: list[int], path: str) -> None:
        """Say where the job's ports are; forward them from a host when someone is attached."""
        if self.notes is None:
            return
        if ex.backend != "local":
            ports = forward_ports(
                self.home, self.forwards, ex.backend, ex.host_name(), ports, self.state
            )
        announce(self.notes, workflow, ports, path)

    # while running -----------------------------------------------------------------------

    def _pump(self, item: Running) -> bool:
        data = self._read_log(item)
        for _, text in item.log.feed(data):
            self._say(item.job.workflow, text)
        now = time.monotonic()
        if now - item.last_sync >= LIVE_SYNC_INTERVAL:
            item.last_sync = now
            self._sync_live(item)
        result = item.handle.poll()
        if result is None:
            return bool(data)
        self._finish(item, result, stopped=False)
        return True

    def _read_log(self, item: Running) -> bytes:
        """New log bytes, always from the local file (a host job's log is mirrored first)."""
        local = mirror_log(self.home, item.executor, item.job)
        try:
            with open(local, "rb") as handle:
                handle.seek(item.log.offset)
                return handle.read()
        except FileNotFoundError:
            return b""

    def _sync_live(self, item: Running) -> None:
        """Save `mount: true` artifacts; when that fails (the store down, a full disk) the job
        goes on, and sealing it at its end says whether its files could be saved."""
        try:
            self._save_mounts(item)
        except (DstackError, OSError) as e:
            if item.job.workflow not in self.sync_failing:
                self.sync_failing.add(item.job.workflow)
                log.warning(
                    "saving %s's artifacts while it runs failed: %s", item.job.workflow, describe(e)
                )
        else:
            self.sync_failing.discard(item.job.workflow)

    def _save_mounts(self, item: Running) -> None:
        mounts = [a.path for a in item.spec.artifacts if a.mount]
        if not mounts or not item.job.job_dir:
            return
        entries = item.executor.collect(item.job.job_dir, mounts, self.cache)
        manifest = Manifest(entries, "live", mounts)
        raw = manifest.to_json()
        if raw != item.live_json:
            self.store.put_manifest(artifact_key(self.run_name, item.job.workflow), manifest)
            item.live_json = raw
            if item.job.manifest is None:
                key = artifact_key(self.run_name, item.job.workflow)
                self.state.update_job(self.run_name, item.job.workflow, manifest=key)

    def _finish(self, item: Running, result: JobExit, stopped: bool) -> None:
        lines = [*item.log.feed(self._read_log(item)), *item.log.close()]
        for _, text in lines:
            self._say(item.job.workflow, text)
        log.info(
            "%s: exited with code %d%s",
            item.job.workflow,
            result.code,
            f" ({result.reason})" if result.reason else "",
        )
        status, manifest = finish_job(
            self.home, self.state, self.store, item.executor, item.job, result, stopped, self.cache
        )
        del self.running[item.job.workflow]
        if manifest is not None:
            self._say_saved(item.job.workflow, manifest)
        item.executor.close()  # before its host goes away
        self._teardown(item.job.workflow)
        if status == "failed":
            error = next(
                j.error for j in self.state.jobs(self.run_name) if j.workflow == item.job.workflow
            )
            if self.prefix_lines or error != (result.reason or f"exited with code {result.code}"):
                self._note(f"{item.job.workflow} failed ({error})")

    def _say_saved(self, workflow: str, manifest: Manifest) -> None:
        """Where the job's artifacts went: the user should not have to guess."""
        self._note(
            f"saved {len(manifest.entries)} files ({format_size(manifest.total_size)}) of "
            f"{workflow} to {self.store.url}"
            + ("" if manifest.state == "complete" else f" ({manifest.state})")
        )

    def _stop_all(self, abort: bool, failure: str | None = None) -> None:
        """Stop every running job (TERM, then KILL; a second Ctrl-C kills at once). With
        ``failure`` (the supervisor itself failed) the jobs fail with that reason instead."""
        if failure is None:
            self.stopping = self.stopping or ("abort" if abort else "stop")
        if self.running:
            self._note(
                "stopping "
                + ", ".join(self.running)
                + ("" if abort else " (Ctrl-C again to kill at once)")
            )
        for item in list(self.running.values()):
            try:
                item.handle.stop(abort=abort)
            except KeyboardInterrupt:
                item.handle.stop(abort=True)
            except (DstackError, OSError) as e:
                log.warning("could not stop %s: %s", item.job.workflow, describe(e))
            try:
                result = item.handle.poll() or JobExit(130, "stopped")
            except (DstackError, OSError) as e:
                result = JobExit(255, f"its end could not be seen: {describe(e)}")
            if failure is not None:
                result = JobExit(result.code or 1, failure)
            self._finish(item, result, stopped=failure is None)
        for job in self.state.jobs(self.run_name):
            if failure is None:
                fail_pending(self.state, job, "the run was stopped", status="stopped")
            else:
                fail_pending(self.state, job, failure)

    def _await_creating(self) -> None:
        """Hosts still being created must be finished (or failed) before they are destroyed:
        the `pulumi up` under way holds the stack's lock. Ctrl-C cancels it (the engine
        receives it too); waiting goes on through it."""
        if self.creating:
            self._note("waiting for the cloud hosts being created, to tear them down")
        for future in self.creating.values():
            while True:
                try:
                    wait([future])
                    break
                except KeyboardInterrupt:
                    self._note("still waiting for the host being created, then tearing it down")
            if future.exception() is None:
                self.opened.append(future.result())
        self.creating.clear()
        if self.threads is not None:
            self.threads.shutdown()

    def _teardown(self, workflow: str) -> None:
        """Destroy the job's cloud host, if it has one (waits through Ctrl-C)."""
        stack = Ledger(self.state).of_job(self.run_name, workflow)
        if stack is not None:
            log.info("%s: tearing down its cloud host %s", workflow, stack.name)
            teardown(self.home, self.state, stack.name, self._note)

    def _tag(self, tag: str) -> None:
        try:
            tag_run(self.state, self.store, tag, self.run_name)
            self._note(f"tagged the run as '{tag}'")
        except DstackError as e:
            self._note(f"the run succeeded but could not be tagged: {e.message}")

    def _say(self, workflow: str, text: str) -> None:
        """A line of job output, prefixed with its job's name when the run has several."""
        if self.out is not None:
            self.out.write(
                format_line("", text, f"{workflow} | " if self.prefix_lines else "", False)
            )
            self.out.flush()

    def _note(self, text: str) -> None:
        """dstack's own messages go to stderr, so stdout carries only the jobs' output; they
        are in the run's log too (the only place a detached supervisor's notes go)."""
        log.info("%s", text)
        if self.notes is not None:
            self.notes.write(f"dstack: {text}\n")
            self.notes.flush()


def supervise(
    home: Home,
    run_name: str,
    out: TextIO | None = sys.stdout,
    notes: TextIO | None = sys.stderr,
    no_cache: bool = False,
) -> int:
    """Run the supervisor for ``run_name`` on this machine; returns the run's exit code."""
    from dstack.execution.local import LocalExecutor

    with run_log(home, run_name):
        state = State(home)
        store = Store.open(home)
        return Supervisor(
            home, state, store, LocalExecutor(home, store), run_name, out, notes, no_cache
        ).run()
