"""A run's life from other processes: Ctrl-C, detach and attach, stop, a killed supervisor,
many dstack processes at once, rerun."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

from conftest import Project, wait_for

# Each job writes its shell's pid beside its working copy (DSTACK_HOME/runs/RUN/JOB/test.pid).
LONG = """
workflows:
  - name: long
    commands:
      - echo $$ > ../test.pid
      - trap 'echo got TERM; exit 143' TERM
      - echo started
      - for i in $(seq 1 300); do sleep 0.1; done
      - echo finished
"""

# Takes TERM as news, not as an order (its sleeps die of it; the loop goes on): only KILL ends it.
STUBBORN = """
workflows:
  - name: long
    commands:
      - echo $$ > ../test.pid
      - trap 'echo going on' TERM
      - echo started
      - for i in $(seq 1 300); do sleep 0.1 || true; done
      - echo finished
"""


def job_pid(project: Project, run: str, workflow: str = "long") -> int:
    path = project.home / "runs" / run / workflow / "test.pid"
    wait_for(path.exists)
    return int(path.read_text())


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] in "ZX"
    except FileNotFoundError:
        return True


def started(project: Project) -> str:
    """Name of the single running run, once its job printed 'started'."""

    def ready() -> str | None:
        runs = [r for r in project.ps() if r["status"] == "running"]
        if runs and "started" in project.dstack("logs", runs[0]["name"]).stdout:
            return str(runs[0]["name"])
        return None

    return str(wait_for(ready, timeout=20, interval=0.2))


def test_ctrl_c_stops_the_job_and_its_process_group(project: Project) -> None:
    project.workflows(LONG)
    proc = project.popen("run", "long")
    run = started(project)
    pid = job_pid(project, run)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "started" in out and "finished" not in out
    assert wait_for(lambda: gone(pid))
    status = project.last_run()
    assert (status["name"], status["status"]) == (run, "stopped")


def test_second_ctrl_c_kills_a_job_that_ignores_term(project: Project) -> None:
    """dstack gives a job 10 s after TERM; a second Ctrl-C does not wait for them."""
    project.workflows(STUBBORN)
    proc = project.popen("run", "long")
    run = started(project)
    pid = job_pid(project, run)
    proc.send_signal(signal.SIGINT)
    log = project.home / "runs" / run / "long" / "log"
    wait_for(lambda: "going on" in log.read_text(), timeout=4)
    assert proc.poll() is None and not gone(pid), "the first Ctrl-C lets the job decide"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=5)  # sooner than the 10 s the first Ctrl-C gave
    assert "Ctrl-C again to kill at once" in err
    assert wait_for(lambda: gone(pid)) and project.last_run()["status"] == "stopped"


def test_sigterm_to_the_run_process_also_stops_cleanly(project: Project) -> None:
    project.workflows(LONG)
    proc = project.popen("run", "long")
    run = started(project)
    pid = job_pid(project, run)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "got TERM" in out, "the job was given the chance to clean up"
    assert wait_for(lambda: gone(pid)) and project.last_run()["status"] == "stopped"


def test_detach_then_logs_follow_and_attach_from_new_processes(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: bg\n    commands: [echo one, sleep 1, echo two, exit 5]\n"
    )
    done = project.dstack("run", "bg", "-d", check=True)
    assert done.stdout == "" and "started in the background" in done.stderr
    run = project.last_run()["name"]
    attach = project.popen("attach", run)
    follow = project.dstack("logs", run, "-f", check=True)
    assert follow.stdout == "one\ntwo\n"
    out, err = attach.communicate(timeout=30)
    assert (out, attach.returncode) == ("one\ntwo\n", 5) and f"Run {run} failed" in err
    assert project.last_run()["exit_code"] == 5


def test_stop_gives_the_job_time_then_abort_kills_at_once(project: Project) -> None:
    project.workflows(LONG)
    project.dstack("run", "long", "-d", check=True)
    run = started(project)
    pid = job_pid(project, run)
    project.dstack("stop", run, check=True)
    assert gone(pid) and project.last_run()["status"] == "stopped"
    assert "got TERM" in project.dstack("logs", run).stdout

    project.workflows(LONG.replace("trap 'echo got TERM; exit 143' TERM", "trap '' TERM"))
    project.dstack("run", "long", "-d", check=True)
    run = started(project)
    pid = job_pid(project, run)
    project.dstack("stop", run, "-x", check=True, timeout=5)  # not the 10 s given after TERM
    assert gone(pid)
    assert project.last_run()["status"] == "stopped"


def test_killed_supervisor_is_reported_truthfully(project: Project) -> None:
    project.workflows("""
        workflows:
          - name: job
            commands: [echo $$ > ../test.pid, echo started, sleep 2, echo saved > out/result.txt]
            artifacts: [out]
    """)
    proc = project.popen("run", "job")
    run = started(project)
    pid = job_pid(project, run, "job")
    proc.kill()
    proc.wait()
    assert project.last_run()["status"] == "running", "the job really still runs"
    wait_for(lambda: gone(pid), timeout=20)
    final = wait_for(lambda: project.last_run()["status"] != "running" and project.last_run())
    assert isinstance(final, dict) and (final["status"], final["exit_code"]) == ("done", 0)
    files = project.dstack("artifacts", "list", run, "--json", check=True).stdout
    assert "out/result.txt" in files, "artifacts were sealed by recovery"


def test_killed_supervisor_and_job_is_failed_not_stuck(project: Project) -> None:
    project.workflows(LONG)
    proc = project.popen("run", "long")
    run = started(project)
    pid = job_pid(project, run)
    proc.kill()
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_for(lambda: gone(pid))
    status = project.last_run()
    assert (status["name"], status["status"]) == (run, "failed")


def test_eight_concurrent_runs_are_all_recorded(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: quick\n    commands: [echo $DSTACK_RUN]\n    artifacts: [out]\n"
    )
    procs = [project.popen("run", "quick") for _ in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1] for o in outputs]
    runs = project.ps()
    assert len(runs) == 8 and len({r["name"] for r in runs}) == 8
    assert {r["status"] for r in runs} == {"done"}
    assert sorted(o[0].strip() for o in outputs) == sorted(r["name"] for r in runs)
    db = sqlite3.connect(project.home / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()[0] == 8


def test_rerun_uses_the_recorded_snapshot(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: show\n    commands:\n      - cat version.txt\n"
        "      - echo ${{ run.args }}\n"
    )
    project.write("version.txt", "v1\n")
    project.dstack("run", "show", "arg1", check=True)
    first = project.last_run()["name"]
    project.write("version.txt", "v2\n")
    done = project.dstack("rerun", first, check=True)
    assert done.stdout == "v1\narg1\n" and f"Re-running {first}" in done.stderr
    again = project.inspect(project.last_run()["name"])
    assert again["code"]["digest"] == project.inspect(first)["code"]["digest"]


def test_inspect_records_what_reproduces_the_run(project: Project) -> None:
    project.workflows("workflows:\n  - name: rec\n    commands:\n      - echo ${{ lr }}\n")
    project.write(".dstack/variables.yaml", "variables:\n  lr: 0.1\n")
    project.dstack("run", "rec", "--lr", "0.3", check=True)
    record = project.inspect(project.last_run()["name"])
    job = record["jobs"][0]
    assert record["variables"] == {"rec": {"lr": "0.3"}}
    assert job["spec"]["commands"] == ["echo 0.3"] and job["provider"] == "bash"
    assert job["backend"] == "local" and job["host"] == os.uname().nodename
    assert len(record["code"]["digest"]) == 64 and record["code"]["files"] == 2
    text = project.dstack("inspect", project.last_run()["name"], check=True).stdout
    assert "digest:" in text and "echo 0.3" in text


def test_help_and_ps_do_not_import_heavy_modules(project: Project) -> None:
    code = (
        "import sys, runpy\nsys.argv = ['dstack'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('dstack', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pulumi', 'pulumi_aws', 'pulumi_gcp', 'pulumi_azure_native',"
        " 'stacks', 'boto3', 'botocore', 'fabric', 'paramiko', 'pydantic', 'yaml')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    for args in (["--help"], ["ps"], ["offers"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=project.root,
            env=project.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "HEAVY []" in done.stderr, (args, done.stderr)
