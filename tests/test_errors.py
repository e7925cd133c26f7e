"""Bad input: one clear paragraph naming file, line and field with a hint; non-zero exit; no traceback;
nothing recorded (the state stays as it was)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Project

GOOD = """
workflows:
  - name: ok
    commands: [echo ok]
"""


def refused(project: Project, *args: str, code: int | None = None) -> str:
    """Run a command that must fail cleanly; return its stderr."""
    before = project.ps() if (project.home / "state.db").exists() else []
    done = project.dstack(*args)
    assert done.returncode != 0, done.stdout
    if code is not None:
        assert done.returncode == code
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert done.stderr.startswith("Error: "), done.stderr
    if (project.home / "state.db").exists():
        assert project.ps() == before
    return done.stderr


@pytest.fixture
def seeded(project: Project) -> Project:
    """A home that already holds one finished run, which a refused command must not disturb."""
    project.workflows(GOOD)
    project.dstack("run", "ok", check=True)
    return project


def test_invalid_yaml_shows_the_line(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: a\n    commands: [echo a\n  - name: b\n")
    err = refused(seeded, "run", "a", code=2)
    assert ".dstack/workflows.yaml:" in err and "invalid YAML" in err and "|" in err


def test_unknown_key_suggests_the_right_one(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: a\n    comands: [echo a]\n")
    err = refused(seeded, "run", "a", code=2)
    assert ".dstack/workflows.yaml:3" in err and "'comands'" in err and "unknown key" in err
    assert "did you mean 'commands'" in err


def test_unknown_resource_key(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: a\n    commands: [x]\n    resources:\n      gpus: 1\n")
    err = refused(seeded, "run", "a", code=2)
    assert ":5" in err and "resources.gpus" in err and "did you mean 'gpu'" in err


def test_wrong_type_names_field_and_line(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: a\n    commands: [x]\n    ports: many\n")
    err = refused(seeded, "run", "a", code=2)
    assert ".dstack/workflows.yaml:4" in err and "field 'ports'" in err


def test_bad_memory_unit(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - name: a\n    commands: [x]\n    resources:\n      memory: 16XB\n"
    )
    err = refused(seeded, "run", "a", code=2)
    assert ":5" in err and "resources.memory" in err and "16XB" in err and "16GB" in err


def test_duplicate_workflow_across_files_names_both(seeded: Project) -> None:
    seeded.write(".dstack/workflows/extra.yaml", "workflows:\n  - name: ok\n    commands: [x]\n")
    err = refused(seeded, "run", "ok", code=2)
    assert ".dstack/workflows/extra.yaml:2" in err and ".dstack/workflows.yaml:2" in err
    assert "defined twice" in err


def test_unknown_workflow_suggests(seeded: Project) -> None:
    err = refused(seeded, "run", "okk")
    assert "Unknown workflow 'okk'" in err and "did you mean 'ok'" in err


def test_cycle_is_named(seeded: Project) -> None:
    seeded.workflows("""
workflows:
  - {name: a, commands: [x], depends-on: [b]}
  - {name: b, commands: [x], depends-on: [c]}
  - {name: c, commands: [x], depends-on: [a]}
""")
    err = refused(seeded, "run", "a", code=2)
    assert "cycle: a -> b -> c -> a" in err


def test_missing_upstream_workflow(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - name: a\n    commands: [x]\n    depends-on: [prepar]\n  - {name: prepare, commands: [x]}\n"
    )
    err = refused(seeded, "run", "a", code=2)
    assert ":4" in err and "unknown workflow 'prepar'" in err and "did you mean 'prepare'" in err


def test_missing_tag_and_missing_dep_say_how_to_produce_them(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - {name: a, commands: [x], deps: [{tag: gold}]}\n"
        "  - {name: b, commands: [x], deps: [{workflow: never}]}\n"
        "  - {name: never, commands: [x]}\n"
        "  - {name: c, commands: [x], depends-on: ['never:gold']}\n"
    )
    assert "dstack tags add gold -r RUN" in refused(seeded, "run", "a")
    assert "dstack run never" in refused(seeded, "run", "b")
    assert "No tag named 'gold'" in refused(seeded, "run", "c")


def test_undefined_variable(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: a\n    commands:\n      - echo ${{ epochs }}\n")
    err = refused(seeded, "run", "a", code=2)
    assert ".dstack/workflows.yaml:4" in err and "variable 'epochs' is not defined" in err


def test_missing_script_and_requirements(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - {name: a, provider: python, script: nope.py}\n"
        "  - {name: b, provider: python, script: b.py, requirements: req.txt}\n"
    )
    seeded.write("b.py", "print(1)\n")
    assert "field 'script': file 'nope.py' does not exist" in refused(seeded, "run", "a")
    assert "field 'requirements': file 'req.txt' does not exist" in refused(seeded, "run", "b")


@pytest.mark.parametrize("path", ["/abs/out", "../outside", "a/../../x"])
def test_artifact_path_must_stay_in_repo(seeded: Project, path: str) -> None:
    seeded.workflows(f"workflows:\n  - name: a\n    commands: [x]\n    artifacts: ['{path}']\n")
    err = refused(seeded, "run", "a", code=2)
    assert ":4" in err and "artifacts[0].path" in err


def test_resources_this_machine_lacks(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - name: big\n    commands: [x]\n"
        "    resources: {cpu: 4096, memory: 64TB, gpu: {count: 2, name: H100}}\n"
    )
    err = refused(seeded, "run", "big")
    assert "4096 CPUs requested" in err and "64TB memory requested" in err
    assert "2 GPUs H100 requested" in err


def test_unavailable_python_version(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - {name: a, provider: python, script: a.py, python: '2.1'}\n")
    seeded.write("a.py", "print(1)\n")
    err = refused(seeded, "run", "a", code=1)
    assert "asks for Python 2.1, but 'python2.1' is not on this host's PATH" in err
    assert "Hint: install Python 2.1" in err


def test_unknown_provider(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - {name: a, provider: bsh, commands: [x]}\n")
    err = refused(seeded, "run", "a")
    assert "provider 'bsh' is not available" in err and "did you mean 'bash'" in err


def test_no_dstack_folder(tmp_path: Path, project: Project) -> None:
    project.root = tmp_path / "empty"
    project.root.mkdir()
    err = refused(project, "run", "a")
    assert "No .dstack/ folder" in err


def test_home_that_is_a_file(project: Project, tmp_path: Path) -> None:
    project.workflows(GOOD)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = project.dstack("run", "ok", env=project.env(DSTACK_HOME=str(blocker / "home")))
    assert done.returncode == 1 and done.stderr.startswith("Error: Cannot create DSTACK_HOME")
    assert "Hint: set DSTACK_HOME" in done.stderr


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to drop to another user (CI runs as root)"
)
def test_home_not_writable_by_the_user(tmp_path: Path) -> None:
    """A real permission check: the CLI runs as `nobody` against a root-owned 0755 home."""
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="dstack-perm-"))
    try:
        base.chmod(0o755)
        project = Project(base / "repo", base / "home")
        project.workflows(GOOD)
        project.home.mkdir(mode=0o755)
        for path in (project.root, project.root / ".dstack"):
            path.chmod(0o755)
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "dstack",
                "run",
                "ok",
            ],
            cwd=project.root,
            env=project.env(HOME=str(base)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert f"DSTACK_HOME {project.home} is not writable" in done.stderr
        assert "Traceback" not in done.stderr
        assert list(project.home.iterdir()) == []
    finally:
        shutil.rmtree(base)
