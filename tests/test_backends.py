"""A backend is one class and one registration: a throw-away backend, defined here and nowhere
else, gets a job placed on it, runs it, is asked to let its host go, and serves the views
afterwards, through the same supervisor and service layer as the built-in ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project

import dstack
from dstack.backends import registry
from dstack.backends.base import Backend, Unavailable, Waiting
from dstack.errors import DstackError
from dstack.execution.base import Executor
from dstack.execution.local import LocalExecutor
from dstack.hostinfo import HostResources
from dstack.offer import Offer, Scope
from dstack.state.records import JobRecord

CALLS: list[str] = []


class SandboxExecutor(LocalExecutor):
    """This machine's processes, under the name of the sandbox's one host."""

    def host_name(self) -> str:
        return "box-1"


class SandboxBackend(Backend):
    name = "sandbox"
    own = True
    settings_by_default = True

    def offers(self, scope: Scope, with_gpus: bool) -> list[Offer]:
        CALLS.append("offers")
        if scope.backend not in (None, self.name):
            return []
        box = HostResources(cpus=64, memory=2**40, disk_free=2**40)
        return [Offer(self.name, "box-1", "", box, 0.0, own=True)]

    def acquire(self, job: JobRecord, offer: Offer) -> Executor | Waiting | Unavailable:
        CALLS.append(f"acquire {job.workflow} on {offer.name}")
        return self.executor(offer.name)

    def release(self, job: JobRecord, files_safe: bool, executor: Executor | None) -> None:
        CALLS.append(f"release {job.workflow} safe={files_safe}")

    def finish(self, run: str) -> None:
        CALLS.append("finish")

    def executor(self, host: str, patient: bool = True) -> Executor:
        from dstack.storage.store import Store

        return SandboxExecutor(self.ctx.home, self.ctx.store or Store.open(self.ctx.home))


@pytest.fixture
def sandbox() -> Iterator[None]:
    CALLS.clear()
    registry.register(SandboxBackend)
    try:
        yield
    finally:
        registry.unregister(SandboxBackend.name)


def test_a_job_runs_end_to_end_through_a_backend_registered_in_the_test(
    project: Project, sandbox: None, tmp_path: Path
) -> None:
    project.workflows("""
        workflows:
          - name: prepare
            commands: [echo preparing]
          - name: hello
            depends-on: [prepare]
            commands: [echo hi from the box, mkdir -p out, printf 7 > out/n.txt]
            artifacts: [out]
    """)
    run = dstack.run("hello", repo=project.root, backend="sandbox")
    assert (run.status, run.exit_code) == ("done", 0)
    assert [(j.workflow, j.backend, j.host) for j in run.jobs()] == [
        ("prepare", "sandbox", "box-1"),
        ("hello", "sandbox", "box-1"),
    ], "each job says where it ran"
    # Placement is decided once for the whole run, at submission; starting a job only takes
    # the host it was given, and each host is let go once its job's files are saved.
    assert CALLS == [
        "offers",
        "acquire prepare on box-1",
        "release prepare safe=True",
        "acquire hello on box-1",
        "release hello safe=True",
        "finish",
    ]
    assert run.logs(job="hello") == "hi from the box\n"  # views reach the host again
    folder = run.download(tmp_path / "dl")
    assert (folder / "out" / "n.txt").read_text() == "7"


def test_an_unknown_backend_and_a_removed_one_are_clear_errors(
    project: Project, sandbox: None
) -> None:
    project.workflows("workflows:\n  - {name: hello, commands: [echo hi]}\n")
    with pytest.raises(DstackError, match="'sandbx' is not a backend") as caught:
        dstack.run("hello", repo=project.root, backend="sandbx")
    assert "sandbox" in (caught.value.hint or ""), "the hint suggests the registered name"
    registry.unregister("sandbox")
    with pytest.raises(DstackError, match="'sandbox' is not a backend"):
        dstack.run("hello", repo=project.root, backend="sandbox")
