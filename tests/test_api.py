"""The Python API (`import dstack`): real runs on this machine, driven in-process through the same
service layer as the CLI, in the throw-away DSTACK_HOME of the `project` fixture."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Project

import dstack
from dstack.errors import NotFoundError, RunStateError

PRODUCE = """
    workflows:
      - name: produce
        commands:
          - echo "hello ${{ run.args }}"
          - mkdir -p out && printf 42 > out/answer.txt
        artifacts: [out]
      - name: fail
        commands: [echo trying, exit 3]
      - name: slow
        commands: [echo started, sleep 60]
"""
CHAIN = """
    workflows:
      - {name: a, commands: [echo from-a]}
      - {name: b, depends-on: [a], commands: [echo from-b]}
"""


def test_an_attached_run_streams_its_output_and_ends_with_its_artifacts(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    project.workflows(PRODUCE)
    run = dstack.run("produce", ["there"], repo=project.root)
    assert capsys.readouterr().out == "hello there\n", "the job's output streamed to stdout"
    info = run.info()
    assert (info.workflow, info.status, info.exit_code) == ("produce", "done", 0)
    assert run.logs() == "hello there\n"
    files = [(f.job, f.path, f.size) for f in run.artifacts()]
    assert files == [("produce", "out/answer.txt", 2)]
    folder = run.download(tmp_path / "dl")
    assert (folder / "out" / "answer.txt").read_text() == "42"
    assert [r.name for r in dstack.runs()] == [run.name] == [project.last_run()["name"]]


def test_a_failing_run_has_its_exit_code_and_its_jobs_say_where_they_ran(
    project: Project,
) -> None:
    project.workflows(PRODUCE)
    run = dstack.run("fail", repo=project.root)
    assert (run.status, run.exit_code) == ("failed", 3)
    [job] = run.jobs()
    assert (job.workflow, job.status, job.exit_code, job.backend) == ("fail", "failed", 3, "local")
    assert run.logs() == "trying\n"


def test_a_detached_run_is_waited_for_then_run_again(project: Project) -> None:
    project.workflows(PRODUCE)
    run = dstack.run("produce", ["later"], repo=project.root, detach=True)
    ended = run.wait(timeout=120)
    assert (ended.name, ended.status, ended.exit_code) == (run.name, "done", 0)
    assert run.logs() == "hello later\n"
    again = dstack.rerun(run.name, detach=True)
    assert again.name != run.name and again.wait(timeout=120).status == "done"
    assert again.logs() == "hello later\n", "the recorded arguments, not new ones"


def test_a_detached_run_can_be_stopped_and_a_wait_gives_up_at_its_timeout(
    project: Project, waiter: Callable[..., object]
) -> None:
    project.workflows(PRODUCE)
    run = dstack.run("slow", repo=project.root, detach=True)
    waiter(lambda: run.logs() == "started\n", 60, what="the job's first line")
    assert run.status == "running"
    with pytest.raises(RunStateError, match=f"Run {run.name} is still running"):
        run.wait(timeout=0.1)
    stopped = dstack.stop(run.name)
    assert (stopped.status, stopped.exit_code) == ("stopped", 130)
    assert run.wait(timeout=30).status == "stopped"
    assert dstack.stop(run.name).status == "stopped", "stopping an ended run changes nothing"


def test_a_chain_lists_its_jobs_in_order_and_each_jobs_log(project: Project) -> None:
    project.workflows(CHAIN)
    run = dstack.run("b", repo=project.root)
    assert [(j.workflow, j.status, j.upstream) for j in run.jobs()] == [
        ("a", "done", []),
        ("b", "done", ["a"]),
    ]
    assert run.logs() == "a | from-a\nb | from-b\n"
    assert run.logs(job="a") == "from-a\n"
    with pytest.raises(NotFoundError, match=f"Run {run.name} has no job 'c'"):
        run.logs(job="c")


def test_a_removed_run_is_gone_from_the_listing(project: Project) -> None:
    project.workflows(PRODUCE)
    run = dstack.run("produce", repo=project.root)
    run.remove()
    assert dstack.runs(all_runs=True) == [] and project.ps() == []
    with pytest.raises(NotFoundError, match=f"No run named '{run.name}'"):
        run.info()


def test_an_unknown_workflow_is_the_error_the_cli_shows(project: Project) -> None:
    project.workflows(PRODUCE)
    with pytest.raises(dstack.DstackError) as raised:
        dstack.run("prodce", repo=project.root)
    error = raised.value
    assert error.hint and "produce" in error.hint, "did you mean"
    shown = project.dstack("run", "prodce")
    assert shown.returncode == error.exit_code != 0
    assert shown.stderr == f"Error: {error.message}\nHint: {error.hint}\n"
    assert dstack.runs(all_runs=True) == [], "nothing was recorded"


GPU_JOB = """
    workflows:
      - name: train
        commands: [nvidia-smi]
        resources:
          gpu: {name: T4, count: 1}
"""
STANDIN = Path(__file__).parent / "standin"


def test_cloud_hosts_are_created_only_when_confirm_says_so(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(
        "backends:\n  aws:\n    allowed_cidr: 203.0.113.0/24\n"
    )
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    project.workflows(GPU_JOB)
    reviews: list[dstack.CloudReview] = []

    def decline(review: dstack.CloudReview) -> bool:
        reviews.append(review)
        return False

    with pytest.raises(RunStateError, match="withdrawn: nothing was created"):
        dstack.run("train", repo=project.root, confirm=decline)
    [review] = reviews
    [host] = review.hosts
    assert (host.job, host.offer.backend, host.offer.name) == ("train", "aws", "g4dn.xlarge")
    assert host.ssh_from is not None and host.ssh_from.cidr == "203.0.113.0/24"
    assert host.resources and "aws:ec2/instance:Instance" in {r.type for r in host.resources}
    with pytest.raises(RunStateError, match="needs cloud hosts") as refused:
        dstack.run("train", repo=project.root)
    assert refused.value.hint and "confirm=" in refused.value.hint
    calls = project.home / "pulumi" / "state" / ".standin" / "calls.log"
    verbs = [line.split()[0] for line in calls.read_text().splitlines()]
    assert verbs.count("preview") == 2 and verbs.count("up") == 0, "nothing was ever created"
    assert not list(calls.parent.glob("dstack-*.json")), "every recorded stack was removed"
    assert dstack.runs(all_runs=True) == []


def test_an_attached_run_from_a_worker_thread_streams_and_ends_the_same(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signals reach only the main thread, so there the run gets a supervisor of its own."""
    project.workflows(PRODUCE)
    ended: list[dstack.RunInfo] = []
    worker = threading.Thread(
        target=lambda: ended.append(dstack.run("produce", ["thread"], repo=project.root).info())
    )
    worker.start()
    worker.join(timeout=120)
    assert [(r.status, r.exit_code) for r in ended] == [("done", 0)]
    assert capsys.readouterr().out == "hello thread\n"


def test_the_cli_shares_the_version_and_prints_listings_literally(project: Project) -> None:
    """`dstack --version` is the package's; table cells are text, never rich markup."""
    assert project.dstack("--version", check=True).stdout == f"dstack {dstack.__version__}\n"
    project.workflows("""
        workflows:
          - {name: fit, help: "Fit [bold]the[/bold] model on data[0:10]", commands: [x]}
    """)
    lines = project.dstack("workflows", check=True).stdout.splitlines()
    assert lines[0].split() == ["WORKFLOW", "PROVIDER", "HELP"]
    assert lines[1].split() == [
        "fit",
        "bash",
        "Fit",
        "[bold]the[/bold]",
        "model",
        "on",
        "data[0:10]",
    ]
