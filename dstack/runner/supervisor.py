"""The supervisor: one per run; owns every job's lifecycle from start to sealed artifacts.

It starts jobs when their upstream jobs are done (independent ones in parallel), reuses
up-to-date upstream jobs, streams logs, saves `mount: true` artifacts while jobs run, seals
manifests, honours stop requests and Ctrl-C, and records the final statuses.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

from dstack.backends.base import Backend, Context
from dstack.backends.registry import HERE, executor_of_job, open_all
from dstack.errors import DstackError, describe
from dstack.execution import procs
from dstack.execution.base import LOG, Executor, JobExit, JobHandle
from dstack.home import Home
from dstack.logs_setup import masker, run_log, run_log_path
from dstack.runner.acquire import HostTaker, Placed
from dstack.runner.finish import fail_pending, finish_job, finish_run, saved_note
from dstack.runner.inputs import Input, external_inputs, upstream_inputs
from dstack.runner.interrupts import Interrupts
from dstack.runner.jobstart import start_job
from dstack.runner.live import LiveSaver, new_log_bytes
from dstack.runner.logs import LogReader, format_line
from dstack.runner.ports import announce, forward_ports, save_access
from dstack.runner.reuse import cache_key, reuse_earlier
from dstack.sharing import open_tags, tag_run
from dstack.spec.jobspec import JobSpec
from dstack.ssh.forward import Forwards
from dstack.state.db import State
from dstack.state.records import JobRecord, RunRecord
from dstack.storage.manifest import Manifest, StatCache
from dstack.storage.store import Store

LIVE_SYNC_INTERVAL = 0.5

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """SIGTERM or a `dstack stop` arrived."""


@dataclass
class Running:
    job: JobRecord
    spec: JobSpec
    handle: JobHandle
    executor: Executor
    backend: Backend
    log: LogReader = field(default_factory=LogReader)
    last_sync: float = 0.0
    live_json: bytes = b""


class Supervisor:
    def __init__(
        self,
        home: Home,
        state: State,
        store: Store,
        run_name: str,
        out: TextIO | None,
        notes: TextIO | None,
        no_cache: bool = False,
    ) -> None:
        self.home, self.state, self.store = home, state, store
        self.run_name, self.out, self.notes, self.no_cache = run_name, out, notes, no_cache
        self.running: dict[str, Running] = {}
        self.cache = StatCache()
        self.stopping: str | None = None
        self.prefix_lines = len(state.jobs(run_name)) > 1
        self.forwards = Forwards()
        self.opened: list[Executor] = []
        self.backends = open_all(Context(home, state, store, self._note))
        self.hosts = HostTaker(self.backends, state, self._note)
        self.live = LiveSaver(store, state, self.cache, self._note)
        self.interrupts = Interrupts()

    # the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        with self.interrupts:  # until the run is recorded as ended
            return self._supervise()

    def _supervise(self) -> int:
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
            self.forwards.close()
            for executor in self.opened:
                executor.close()
            for backend in self._used_backends():  # hosts of jobs that never started
                self.interrupts.taking_ctrl_c(partial(backend.finish, self.run_name))
        stopped = self.stopping is not None or self.interrupts.requested is not None
        status, code = finish_run(self.state, self.store, self.run_name, run.workflow, stopped)
        log.info("run %s %s (exit code %d)", self.run_name, status, code)
        if crash is not None:
            raise crash
        if status == "done" and run.tag:
            self._tag(run.tag)
        return code

    def _used_backends(self) -> list[Backend]:
        """The backends the run's jobs were placed on (all, for runs from before placements)."""
        jobs = self.state.jobs(self.run_name)
        if any(not job.placement for job in jobs):
            return list(self.backends.values())
        names = {offer.backend for job in jobs for offer in job.placement}
        return [backend for name, backend in self.backends.items() if name in names]

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
                ctx = Context(self.home, self.state, self.store, self._note)
                ex = self._keep(executor_of_job(ctx, job))
                log = self.home.job_dir(self.run_name, job.workflow) / LOG
                offset = log.stat().st_size if log.exists() else 0
                handle = ex.adopt(job.job_dir, job.pid, job.pid_start)
                backend = self.backends[job.backend or HERE]
                self.running[job.workflow] = Running(
                    job, job.job_spec, handle, ex, backend, LogReader(offset)
                )

    def _keep(self, executor: Executor) -> Executor:
        """Remember a host executor so its connection is closed when the run ends."""
        self.opened.append(executor)
        return executor

    def _loop(self, run: RunRecord) -> None:
        idle = 0.005
        last_check = 0.0
        while True:
            if self.interrupts.requested is not None:  # SIGTERM or Ctrl-C arrived
                raise StopRequested
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

    # starting ---------------------------------------------------------------------------

    def _start_ready(self, jobs: dict[str, JobRecord], target: str) -> bool:
        started = False
        for job in jobs.values():
            if job.status not in ("submitted", "waiting") or job.workflow in self.running:
                continue
            if any(b.preparing(job.workflow) for b in self.backends.values()):
                continue
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
        spec = job.job_spec
        run = self.state.run(self.run_name)
        try:
            tags = open_tags(self.state, self.store)
            inputs = inputs + external_inputs(self.state, tags, spec)
            manifests = {i.manifest: self.store.get_manifest(i.manifest) for i in inputs}
            key = cache_key(run.snapshot["digest"], job.spec, manifests.values())
            if (
                not is_target
                and not self.no_cache
                and reuse_earlier(self.state, self.store, job, key, self._note)
            ):
                return True
            return self._launch(run, job, spec, inputs, manifests, key)
        except (DstackError, OSError) as e:  # a job that cannot start fails alone, with the reason
            reason = masker(self.home)(describe(e))
            fail_pending(self.state, job, f"could not start: {reason}")
            self._note(f"{job.workflow} could not start: {reason}")
            return True

    def _launch(
        self,
        run: RunRecord,
        job: JobRecord,
        spec: JobSpec,
        inputs: list[Input],
        manifests: dict[str, Manifest],
        key: str,
    ) -> bool:
        placed: Placed | None = None
        try:
            placed = self.hosts.take(run, job)
            if placed is None:
                return False
            ex = self._keep(placed.executor)
            log.info("%s: placed on %s (%s)", job.workflow, ex.host_name(), placed.backend.name)
            started = start_job(
                self.home, self.store, ex, placed.backend.name, run, job, spec, inputs, manifests
            )
            self.state.update_job(
                self.run_name,
                job.workflow,
                status="running",
                started_at=time.time(),
                pid=started.handle.pid,
                pid_start=started.handle.pid_start,
                job_dir=started.job_dir,
                cache_key=key,
                record=started.record,
            )
        except BaseException:
            for backend in [placed.backend] if placed else self.hosts.holders(job):
                backend.release(job, files_safe=False, executor=None)
            raise
        fresh = next(j for j in self.state.jobs(self.run_name) if j.workflow == job.workflow)
        self.running[job.workflow] = Running(fresh, spec, started.handle, ex, placed.backend)
        log.info("%s: started, pid %s in %s", job.workflow, started.handle.pid, started.job_dir)
        if started.note:
            self._note(started.note)
        if started.ports:
            access = save_access(self.home, self.run_name, job.workflow, started.url_path)
            self._open_ports(fresh, started.ports, access)
        return True

    def _open_ports(self, job: JobRecord, ports: list[int], path: str) -> None:
        """Say where the job's ports are; forward them from a host when someone is attached."""
        if self.notes is not None:
            ports = forward_ports(self.home, self.state, self.forwards, job, ports)
            announce(self.notes, job.workflow, ports, path)

    # while running -----------------------------------------------------------------------

    def _pump(self, item: Running) -> bool:
        data = self._read_log(item)
        for _, text in item.log.feed(data):
            self._say(item.job.workflow, text)
        now = time.monotonic()
        if now - item.last_sync >= LIVE_SYNC_INTERVAL:
            item.last_sync = now
            item.live_json = self.live.save(item.executor, item.job, item.spec, item.live_json)
        result = item.handle.poll()
        if result is None:
            return bool(data)
        self._finish(item, result, stopped=False)
        return True

    def _read_log(self, item: Running) -> bytes:
        return new_log_bytes(self.home, item.executor, item.job, item.log.offset)

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
        done = finish_job(
            self.home,
            self.state,
            self.store,
            item.backend,
            item.executor,
            item.job,
            result,
            stopped,
            self.cache,
        )
        del self.running[item.job.workflow]
        if done.manifest is not None:
            self._note(saved_note(item.job.workflow, done.manifest, self.store.url))
        release = partial(item.backend.release, item.job, done.files_safe, item.executor)
        self.interrupts.taking_ctrl_c(release)  # a host's teardown goes on through Ctrl-C
        item.executor.close()
        if done.status == "failed":
            error = next(
                j.error for j in self.state.jobs(self.run_name) if j.workflow == item.job.workflow
            )
            if self.prefix_lines or error != (result.reason or f"exited with code {result.code}"):
                self._note(f"{item.job.workflow} failed ({error})")

    def _stop_all(self, abort: bool, failure: str | None = None) -> None:
        """Stop every running job (TERM, then KILL; a second Ctrl-C kills at once). With
        ``failure`` (the supervisor itself failed) the jobs fail with that reason instead."""
        if failure is None:
            self.stopping = self.stopping or ("abort" if abort else "stop")
        if self.running:
            again = "" if abort else " (Ctrl-C again to kill at once)"
            self._note(f"stopping {', '.join(self.running)}{again}")
        for item in list(self.running.values()):
            abort = abort or self.interrupts.requested == "abort"
            try:
                self.interrupts.taking_ctrl_c(partial(item.handle.stop, abort=abort))
            except KeyboardInterrupt:  # Ctrl-C again: killed at once, over a new connection
                item.executor.close()  # (the interrupt may have cut an SSH exchange short)
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
    with run_log(home, run_name):
        state = State(home)
        store = Store.open(home)
        return Supervisor(home, state, store, run_name, out, notes, no_cache).run()
