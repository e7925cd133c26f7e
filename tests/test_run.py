"""Running one workflow on this machine: output, exit codes, logs, working copy, env, providers."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

from conftest import Project


def test_output_streams_and_exit_code_propagates(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: fail\n    commands:\n      - echo before\n"
        "      - exit 3\n      - echo never\n"
    )
    done = project.dstack("run", "fail")
    assert done.returncode == 3
    assert done.stdout == "before\n"
    run = project.last_run()
    assert (run["status"], run["exit_code"]) == ("failed", 3)


def test_success_is_done_and_logs_are_kept_with_timestamps(project: Project) -> None:
    project.workflows("workflows:\n  - name: hello\n    commands: [echo hello, echo world]\n")
    assert project.dstack("run", "hello", check=True).stdout == "hello\nworld\n"
    run = project.last_run()
    assert (run["status"], run["exit_code"]) == ("done", 0)
    assert project.dstack("logs", run["name"], check=True).stdout == "hello\nworld\n"
    stamped = project.dstack("logs", run["name"], "--timestamps", check=True).stdout.splitlines()
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (hello|world)$", line) for line in stamped
    )


def test_working_copy_holds_tracked_and_untracked_but_not_ignored_files(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: ls\n    commands: [ls -a1 | sort, echo changed > tracked.txt]\n"
    )
    project.write("tracked.txt", "t\n")
    project.write("untracked.txt", "u\n")
    project.write("ignored.log", "i\n")
    project.write(".gitignore", "*.log\n")
    git = ["git", "-C", str(project.root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "tracked.txt", ".gitignore", ".dstack"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    listing = project.dstack("run", "ls", check=True).stdout.split()
    assert "tracked.txt" in listing and "untracked.txt" in listing and ".dstack" in listing
    assert "ignored.log" not in listing and ".git" not in listing
    assert (project.root / "tracked.txt").read_text() == "t\n", "the job must not touch the repo"
    code = project.inspect(project.last_run()["name"])["code"]
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert code["commit"] == head and code["dirty_hash"]  # untracked.txt makes it dirty


def test_folder_that_is_not_a_git_repo_works(project: Project) -> None:
    project.workflows("workflows:\n  - name: cat\n    commands: [cat data.txt]\n")
    project.write("data.txt", "plain folder\n")
    assert project.dstack("run", "cat", check=True).stdout == "plain folder\n"
    assert project.inspect(project.last_run()["name"])["code"]["commit"] is None


def test_env_working_dir_and_ports(project: Project) -> None:
    project.workflows("""
        workflows:
          - name: env
            working_dir: sub
            env: [A=1, FROM_CALLER]
            environment: {B: two words}
            ports: 1
            commands:
              - pwd | sed 's|.*/||'
              - echo "$A|$B|$FROM_CALLER|$DSTACK_WORKFLOW"
              - test "$PORT_0" -gt 1024 && echo port-ok
    """)
    (project.root / "sub").mkdir()
    done = project.dstack("run", "env", env=project.env(FROM_CALLER="caller"))
    assert done.stdout.splitlines() == ["sub", "1|two words|caller|env", "port-ok"], done.stderr


def test_setup_runs_before_commands(project: Project) -> None:
    project.workflows(
        "workflows:\n  - name: s\n    setup: [echo setup]\n    commands: [echo main]\n"
    )
    assert project.dstack("run", "s", check=True).stdout == "setup\nmain\n"


def test_python_provider_runs_script_with_args(project: Project) -> None:
    project.workflows("""
        workflows:
          - name: py
            provider: python
            script: tool.py
            args: ["--n", "3", "${{ run.args }}"]
    """)
    project.write("tool.py", "import sys\nprint('args', sys.argv[1:])\n")
    done = project.dstack("run", "py", "extra", check=True)
    assert done.stdout == "args ['--n', '3', 'extra']\n"


def _tiny_wheel(folder: Path) -> Path:
    """A real installable wheel of a one-module package, so no index is needed."""
    wheel = folder / "tinydep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tinydep.py", "VALUE = 42\n")
        zf.writestr(
            "tinydep-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n"
        )
        zf.writestr(
            "tinydep-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr("tinydep-1.0.dist-info/RECORD", "")
    return wheel


def test_python_requirements_build_a_cached_venv(project: Project) -> None:
    project.workflows("""
        workflows:
          - name: dep
            provider: python
            script: use.py
            requirements: requirements.txt
    """)
    wheel = _tiny_wheel(project.root)
    project.write("requirements.txt", f"{wheel.name}\n")
    project.write(
        "use.py",
        "import sys, tinydep\nprint('value', tinydep.VALUE, sys.prefix != sys.base_prefix)\n",
    )
    first = project.dstack("run", "dep", check=True, timeout=300)
    assert "building the Python environment" in first.stdout
    assert first.stdout.endswith("value 42 True\n")
    second = project.dstack("run", "dep", check=True)
    assert second.stdout == "value 42 True\n", "the venv is reused, not rebuilt"
    venvs = list((project.home / "venvs").glob("*/.dstack-ready"))
    assert len(venvs) == 1
    project.write("requirements.txt", f"{wheel.name}\n# changed\n")
    assert "building the Python environment" in project.dstack("run", "dep", check=True).stdout
    assert len(list((project.home / "venvs").glob("*/.dstack-ready"))) == 2


def test_python_version_is_used(project: Project) -> None:
    import sys

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    project.workflows(
        f"workflows:\n  - {{name: v, provider: python, script: v.py, python: '{version}'}}\n"
    )
    project.write("v.py", "import sys\nprint(sys.version_info[:2])\n")
    done = project.dstack(
        "run", "v", env=project.env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == str(sys.version_info[:2])


def test_cached_plan_follows_every_change_to_the_workflow_files(project: Project) -> None:
    project.workflows("workflows:\n  - name: v\n    commands:\n      - echo ${{ x }}\n")
    project.write(".dstack/variables.yaml", "variables:\n  x: one\n")
    assert project.dstack("run", "v", check=True).stdout == "one\n"
    assert project.dstack("run", "v", check=True).stdout == "one\n"
    project.write(".dstack/variables.yaml", "variables:\n  x: two\n")
    assert project.dstack("run", "v", check=True).stdout == "two\n"
    project.write(".dstack/workflows/more.yaml", "workflows: [\n")
    assert project.dstack("run", "v").returncode == 2, "a new broken file is seen at once"
    (project.root / ".dstack" / "workflows" / "more.yaml").unlink()
    for cached in (project.home / "cache" / "plans").glob("*.json"):
        cached.write_text("{damaged")
    assert project.dstack("run", "v", "--x", "three", check=True).stdout == "three\n"
    assert project.dstack("run", "v", check=True).stdout == "two\n"


def test_detached_run_writes_its_lifecycle_to_the_run_log(project: Project) -> None:
    from conftest import wait_for

    project.workflows("""
        workflows:
          - name: bg
            commands: [mkdir -p out, echo made > out/r.txt, echo hello]
            artifacts: [out]
    """)
    project.dstack("run", "bg", "-d", check=True)
    run = project.last_run()["name"]
    wait_for(lambda: project.last_run()["status"] == "done", 60)
    log = (project.home / "runs" / run / "dstack.log").read_text()
    for step in (
        f"runs {run} (target bg)",
        "bg: placed on ",
        "bg: started, pid ",
        "bg: exited with code 0",
        f"bg: sealed 1 files as manifests/{run}/bg.json",
        f"saved 1 files (5B) of bg to {(project.home / 'store').as_uri()}",
        f"run {run} done (exit code 0)",
    ):
        assert step in log, (step, log)
    assert " INFO dstack.runner." in log and "hello" not in log, "dstack's own records only"


def _bug_plugin(site: Path) -> None:
    """A provider whose script() raises an exception dstack cannot expect, quoting a token."""
    site.mkdir()
    (site / "bug_provider.py").write_text(
        "from dstack.providers.base import Provider\n"
        "class BugProvider(Provider):\n"
        "    name = 'bug'\n"
        "    def script(self, wf, host):\n"
        "        raise ZeroDivisionError('token s3cr3t-value and second-line-of-key')\n"
    )
    info = site / "bug_provider-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bug-provider\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dstack.providers]\nbug = bug_provider:BugProvider\n")


def test_unexpected_error_ends_with_one_line_naming_the_log(
    project: Project, tmp_path: Path
) -> None:
    import os

    _bug_plugin(tmp_path / "site")
    env = project.env(
        PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    project.dstack("secrets", "add", "TOKEN", "s3cr3t-value", check=True)
    project.dstack("secrets", "add", "KEY", "first-line\nsecond-line-of-key", check=True)
    project.workflows("workflows:\n  - {name: b, provider: bug, commands: [x]}\n")
    done = project.dstack("run", "b", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    run = project.last_run()["name"]
    log = project.home / "runs" / run / "dstack.log"
    last = done.stderr.splitlines()[-1]
    assert last == (
        f"dstack: unexpected error: ZeroDivisionError: token ****** and ******; details in {log}"
    ), done.stderr
    assert "s3cr3t" not in done.stderr + log.read_text() and "second-line" not in log.read_text()
    text = log.read_text()
    assert "Traceback" in text and "raise ZeroDivisionError" in text and "bug_provider.py" in text
    job = project.inspect(run)["jobs"][0]
    assert project.last_run()["status"] == "failed", "the run is not left running"
    assert job["error"].startswith("unexpected error in dstack: ZeroDivisionError: token ******")
    assert "s3cr3t" not in project.dstack("inspect", run, "--json", check=True).stdout
    debug = project.dstack("--debug", "run", "b", env=env)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "s3cr3t" not in debug.stderr


def test_unexpected_error_before_a_run_exists_goes_to_the_home_log(
    project: Project, tmp_path: Path
) -> None:
    import os

    site = tmp_path / "site"
    info = site / "crash_provider-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "crash_provider.py").write_text("raise ZeroDivisionError('broken at import')\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crash-provider\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dstack.providers]\ncrash = crash_provider:X\n")
    project.workflows("workflows:\n  - {name: c, provider: crash, commands: [x]}\n")
    project.dstack("ps", check=True)  # the home exists
    env = project.env(PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = project.dstack("run", "c", env=env)
    log = project.home / "dstack.log"
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"dstack: unexpected error: ZeroDivisionError: broken at import; details in {log}\n"
    )
    text = log.read_text()
    assert "`dstack run c` failed" in text and "crash_provider.py" in text and "Traceback" in text
