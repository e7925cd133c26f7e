"""Secrets: stored 0600, given to jobs as environment variables, masked in streamed and stored
logs, never shown by `secrets list` or `inspect`."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

from conftest import Project, wait_for
from sshd import SSHServer
from test_ssh_run import home_id, pool_add

VALUE = "s3cr3t-Value-42"


def add_secret(project: Project, name: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dstack", "secrets", "add", name],
        input=value + "\n",
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_secret_reaches_the_job_and_is_masked_everywhere(project: Project) -> None:
    add_secret(project, "API_TOKEN", VALUE)
    project.workflows("""
        workflows:
          - name: leak
            commands:
              - echo "token=$API_TOKEN"
              - echo "$API_TOKEN" | sha256sum | cut -c1-16
              - echo "twice $API_TOKEN $API_TOKEN" >&2
    """)
    done = project.dstack("run", "leak", check=True)
    assert VALUE not in done.stdout + done.stderr
    digest = hashlib.sha256(f"{VALUE}\n".encode()).hexdigest()[:16]
    assert done.stdout == f"token=******\n{digest}\ntwice ****** ******\n", (
        "the job sees the real value"
    )
    run = project.last_run()["name"]
    assert VALUE not in project.dstack("logs", run, check=True).stdout
    assert VALUE not in project.dstack("inspect", run, "--json", check=True).stdout
    for path in (project.home / "runs").rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), f"{path} holds the secret"
    assert VALUE.encode() not in (project.home / "state.db").read_bytes()


def test_secrets_file_is_private_and_list_shows_names_only(project: Project) -> None:
    add_secret(project, "WANDB_API_KEY", VALUE)
    project.dstack("secrets", "add", "OTHER", "inline-value", check=True)
    mode = stat.S_IMODE((project.home / "secrets.json").stat().st_mode)
    assert mode == 0o600
    listed = project.dstack("secrets", "list", "--json", check=True).stdout
    assert [s["name"] for s in json.loads(listed)] == ["OTHER", "WANDB_API_KEY"]
    assert VALUE not in listed and VALUE not in project.dstack("secrets", "list").stdout
    project.dstack("secrets", "delete", "OTHER", check=True)
    missing = project.dstack("secrets", "delete", "WANDB_API_KE")
    assert missing.returncode == 1 and "did you mean 'WANDB_API_KEY'" in missing.stderr
    bad = project.dstack("secrets", "add", "1-bad", "x")
    assert bad.returncode == 2 and "cannot be a secret's name" in bad.stderr


# A key file's shape, with what shells and error messages quote: quotes, $( ), backticks,
# backslashes, globs; a line with blanks around it; a trivial line ('}') left alone.
MULTI_LINE = (
    "-----BEGIN TEST KEY-----\n"
    'line-one: it\'s "quoted" $(touch {marker}) `touch {marker}` ; & | \\ *glob?\n'
    "   indented line $HOME ${{PATH}} with blanks   \n"
    "}}\n"
    "last-line-9f8e7d"
)


def secret_lines(value: str) -> list[str]:
    """The value and each of its lines a reader could recognise it by."""
    return [value, *(line.strip() for line in value.splitlines() if len(line.strip()) >= 4)]


def files_holding(root: Path, pieces: list[str], skip: set[Path]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip:
            data = path.read_bytes()
            found += [f"{path}: {piece!r}" for piece in pieces if piece.encode() in data]
    return found


def test_multi_line_secret_is_masked_line_by_line_everywhere(
    project: Project, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    value = MULTI_LINE.format(marker=marker)
    add_secret(project, "DEPLOY_KEY", value)  # from stdin, all of it
    project.workflows("""
        workflows:
          - name: leak
            commands: |
              echo "whole: $DEPLOY_KEY"
              printf '%s\\n' "$DEPLOY_KEY" | while read -r l; do echo "line: $l"; done
              printf '%s' "$DEPLOY_KEY" | sha256sum | cut -c1-16
              set -x; true "$DEPLOY_KEY"; set +x
              ls "/nonexistent/$DEPLOY_KEY" || true
              python3 -c 'import os; print(os.environ)'
              cat "$DEPLOY_KEY"
    """)
    done = project.dstack("run", "leak")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    assert digest in done.stdout.splitlines(), "the job sees the whole value, all its lines"
    assert "whole: ******" in done.stdout and "line: ******" in done.stdout
    assert "line: }" in done.stdout, "a trivial line is left alone"
    run = project.last_run()["name"]
    project.dstack("run", "leak", "-d", check=True)  # a detached supervisor logs to files
    detached = project.last_run()["name"]
    follow = project.dstack("logs", detached, "-f")
    pieces = secret_lines(value)
    shown = {
        "run": done.stdout + done.stderr,
        "logs": project.dstack("logs", run, check=True).stdout,
        "logs -f": follow.stdout + follow.stderr,
        "inspect": project.dstack("inspect", run, "--json", check=True).stdout,
        "ps": project.dstack("ps", "-a", "--json", check=True).stdout,
    }
    assert "whole: ******" in follow.stdout
    for where, text in shown.items():
        assert not [p for p in pieces if p in text], f"{where} shows the secret:\n{text}"
    assert not files_holding(project.home, pieces, {project.home / "secrets.json"})
    assert not marker.exists(), "the value was run as a command"


def test_secret_names_that_would_replace_what_jobs_need_are_refused(project: Project) -> None:
    for name in ("PATH", "HOME", "SHELL", "BASH_ENV", "DSTACK_RUN", "PORT_0", "PYTHONUNBUFFERED"):
        done = project.dstack("secrets", "add", name, "value")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"'{name}' cannot be a secret's name" in done.stderr
        assert "Hint: pick a name of your own" in done.stderr
    assert "PATH" not in project.dstack("secrets", "list").stdout
    binary = subprocess.run(
        [sys.executable, "-m", "dstack", "secrets", "add", "BLOB"],
        input=b"a\0b",
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        timeout=60,
    )
    assert binary.returncode == 2 and b"holds a NUL byte" in binary.stderr


def store_secret_by_hand(project: Project, name: str) -> None:
    """As an older dstack (or an edit) left it: no check on the name."""
    path = project.home / "secrets.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"value": "/nowhere", "updated_at": 0}
    path.write_text(json.dumps(data))


def test_secret_stored_under_a_reserved_name_is_refused_before_the_run(
    project: Project,
) -> None:
    project.workflows("workflows:\n  - {name: hello, commands: [echo hello]}\n")
    project.dstack("ps", check=True)  # creates the home
    store_secret_by_hand(project, "PATH")
    done = project.dstack("run", "hello")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Secret 'PATH' cannot be given to jobs" in done.stderr
    assert "dstack secrets delete PATH" in done.stderr
    assert project.ps() == [], "no run was recorded"


def test_secret_stored_under_a_reserved_name_fails_the_job_that_starts_later(
    project: Project, tmp_path: Path
) -> None:
    """Added while an upstream job runs: the next job fails with the reason, never silently."""
    go = tmp_path / "go"
    project.workflows(f"""
        workflows:
          - name: first
            commands: ['echo waiting', 'while [ ! -e {go} ]; do sleep 0.05; done']
          - name: second
            depends-on: [first]
            commands: [echo never]
    """)
    project.dstack("run", "second", "-d", check=True)
    run = project.last_run()["name"]
    wait_for(lambda: "waiting" in project.dstack("logs", run).stdout, timeout=30)
    store_secret_by_hand(project, "DSTACK_WORKFLOW")
    go.touch()
    wait_for(lambda: project.last_run()["status"] in ("done", "failed"), timeout=30)
    jobs = {j["workflow"]: j for j in project.inspect(run)["jobs"]}
    assert jobs["first"]["status"] == "done"
    assert jobs["second"]["status"] == "failed"
    assert "Secret 'DSTACK_WORKFLOW' cannot be given to jobs" in jobs["second"]["error"]
    assert "never" not in project.dstack("logs", run).stdout


def test_env_file_is_gone_once_the_job_started_and_after_a_kill(tmp_path: Path) -> None:
    """env.sh holds the secrets: the wrapper deletes it before the job runs, and a job killed
    before its wrapper got that far has it deleted by the kill."""
    from dstack.execution.local import LocalExecutor
    from dstack.home import Home
    from dstack.storage.objects import LocalObjectStore
    from dstack.storage.store import Store

    executor = LocalExecutor(Home(tmp_path / "home"), Store(LocalObjectStore(tmp_path / "store")))
    env = {"TOKEN": "hush-hush-123", "DSTACK_MASK_VARS": "TOKEN"}
    seen = tmp_path / "seen"
    job = executor.start(str(tmp_path / "a"), ".", f"ls -a .. > {seen}; echo $TOKEN; sleep 30", env)
    wait_for(lambda: b"******" in job.read_log(0), timeout=10, what="the job's first line")
    assert "env.sh" not in seen.read_text().split() and not (tmp_path / "a/env.sh").exists()
    job.stop(abort=True)
    for attempt in range(5):  # the kill lands before, during or after the wrapper reads it
        killed = executor.start(str(tmp_path / f"k{attempt}"), ".", "sleep 30", env)
        killed.stop(abort=True)
        assert not (tmp_path / f"k{attempt}" / "env.sh").exists()


def test_on_a_host_env_file_is_gone_once_the_job_started_and_lines_are_masked(
    project: Project, sshd_local: SSHServer
) -> None:
    pool_add(project, "box", sshd_local)
    add_secret(project, "KEY_FILE", "first-line-abc\nsecond-line-def")
    project.workflows("""
        workflows:
          - name: s
            commands: |
              ls -a .. | tr '\\n' ' '; echo
              printf '%s\\n' "$KEY_FILE"
              echo started
              sleep 60
    """)
    project.dstack("run", "s", "--host", "box", "-d", check=True)
    run = project.last_run()["name"]
    wait_for(lambda: "started" in project.dstack("logs", run).stdout, timeout=60)
    on_host = sshd_local.ssh(f"ls -a ~/.dstack/runs/{home_id(project)}/{run}/s").split()
    assert "wrapper.sh" in on_host and "env.sh" not in on_host
    logs = project.dstack("logs", run, check=True).stdout
    seen_by_job, *rest = logs.splitlines()
    assert "wrapper.sh" in seen_by_job.split() and "env.sh" not in seen_by_job.split()
    assert rest == ["******", "******", "started"]
    project.dstack("stop", run, "-x", check=True)
