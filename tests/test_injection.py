"""No value reaches a shell unquoted: run args, variables, env values, a DSTACK_HOME and a repo
whose paths hold blanks, `$` and quotes, and artifact file names arrive verbatim in the job, on
this machine and on a real SSH host, and nothing in them runs. Names that cannot be quoted
(env keys, host names, login names) are refused with a clear error."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from sshd import SSHServer
from test_ssh_run import pool_add


@pytest.fixture
def marks() -> Iterator[Path]:
    """A folder any user can write to: a hostile value that ran as a command leaves a file
    here (the SSH host's user included), so an empty folder shows that nothing ran."""
    folder = Path(tempfile.mkdtemp(prefix="dstack-marks-", dir="/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def hostile(marks: Path) -> list[str]:
    """Values that a shell would run something in, were they not quoted."""
    touch = f"touch {marks}/ran"
    return [
        f"; {touch}",
        f"$({touch})",
        f"`{touch}`",
        f"line one\n{touch}",
        f"it's 'single'; {touch}; '",
        f'say "double"; {touch}; "',
        "back\\slash $HOME ${PATH} * ? ~ | & > <",
    ]


# Each job prints one line per value it got: what the value is, then its bytes in hex.
WORKFLOWS = """
workflows:
  - name: sh
    env: {env}
    commands: |
      hex() {{ printf '%s' "$1" | od -An -tx1 | tr -d ' \\n'; echo; }}
      for a in ${{{{ run.args }}}}; do echo "arg $(hex "$a")"; done
      for k in $KEYS; do echo "env $(hex "${{!k}}")"; done
      echo "var $(hex ${{{{ v }}}})"
      mkdir -p out && for k in $KEYS; do printf '%s' "${{!k}}" > "out/$(printf '%s' "${{!k}}" | tr '\\n/' '__')"; done
    artifacts: [out]
  - name: py
    provider: python
    script: show.py
    requirements: {requirements}
    args: ${{{{ run.args }}}}
  - name: both
    depends-on: [sh, py]
    commands: [echo both]
"""
SHOW = """
import sys
for a in sys.argv[1:]:
    print("arg", a.encode().hex())
"""
REQUIREMENTS = "req $(touch ran) 'q' \"d\".txt"


def hostile_project(root: Path, marks: Path) -> tuple[Project, list[str]]:
    """A repo and a DSTACK_HOME whose paths a shell would split or expand, with WORKFLOWS."""
    project = Project(
        root / "re po 'single' \"double\" $(touch ran)", root / "ho me $HOME `touch ran` 'q'"
    )
    values = hostile(marks)
    env = {f"E{i}": value for i, value in enumerate(values)}
    env["V"] = "${{ v }}"
    env["KEYS"] = " ".join([*(f"E{i}" for i in range(len(values))), "V"])
    project.workflows(WORKFLOWS.format(env=json.dumps(env), requirements=json.dumps(REQUIREMENTS)))
    project.write(".dstack/variables.yaml", f"variables:\n  v: {json.dumps(values[0])}\n")
    project.write("show.py", SHOW)
    project.write(REQUIREMENTS, "# nothing to install\n")
    return project, values


def received(stdout: str, job: str) -> dict[str, list[str]]:
    """What the job printed, by kind ('arg', 'env', 'var'), decoded from hex."""
    seen: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        name, _, text = line.partition(" | ")
        kind, _, data = text.partition(" ")
        if name == job and kind in ("arg", "env", "var"):
            seen.setdefault(kind, []).append(bytes.fromhex(data).decode())
    return seen


def check_verbatim(project: Project, marks: Path, values: list[str], *run_options: str) -> str:
    """Run `both` with hostile run args and a variable override; everything arrives as it was."""
    args, variable = values[1:], values[2]
    done = project.dstack("run", "both", *run_options, "--v", variable, *args, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert received(done.stdout, "sh") == {
        "arg": args,
        "env": [*values, variable],
        "var": [variable],  # `${{ v }}` right in a command line
    }
    assert received(done.stdout, "py") == {"arg": args}
    assert list(marks.iterdir()) == [], "a value ran as a command"
    assert not [p for p in project.root.parent.rglob("ran")], "a path ran as a command"
    run = project.last_run()["name"]
    files = json.loads(project.dstack("artifacts", "list", run, "--json", check=True).stdout)
    names = {f["path"] for f in files["sh"]["files"]}
    assert names == {"out/" + v.replace("\n", "_").replace("/", "_") for v in [*values, variable]}
    return run


def test_hostile_values_and_paths_arrive_verbatim_here(tmp_path: Path, marks: Path) -> None:
    project, values = hostile_project(tmp_path, marks)
    try:
        check_verbatim(project, marks, values)
    finally:
        project.cleanup()


def test_hostile_values_and_paths_arrive_verbatim_on_a_host(
    tmp_path: Path, marks: Path, sshd_local: SSHServer
) -> None:
    project, values = hostile_project(tmp_path, marks)
    try:
        pool_add(project, "box", sshd_local)
        run = check_verbatim(project, marks, values, "--host", "box")
        jobs = {j["workflow"]: j for j in project.inspect(run)["jobs"]}
        assert jobs["sh"]["host"] == jobs["py"]["host"] == "box"
    finally:
        project.cleanup()


def test_env_names_that_are_not_identifiers_are_refused(tmp_path: Path, marks: Path) -> None:
    from dstack.errors import SpecError
    from dstack.execution.base import env_script

    for key in (f"A;touch {marks}/ran", "A B", "1A", "A-B", "PATH", "HOME", ""):
        with pytest.raises(SpecError, match="cannot be an environment variable of a job"):
            env_script({key: "x"})
    with pytest.raises(SpecError, match="holds a NUL byte"):
        env_script({"A": "x\0y"})
    project = Project(tmp_path / "repo", tmp_path / "home")
    project.workflows(
        "workflows:\n"
        f"  - {{name: bad, env: {{'X=1;touch {marks}/ran;Y': v}}, commands: [echo hi]}}\n"
    )
    done = project.dstack("run", "bad")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "X=1;touch" in done.stderr + done.stdout, "the error names the key"
    assert list(marks.iterdir()) == []


def test_artifact_names_with_quotes_dollars_and_backslashes_come_back(
    tmp_path: Path, sshd_local: SSHServer
) -> None:
    """Both transfers, rsync and SFTP, list and fetch such files by their exact names."""
    import hashlib

    from dstack.backends.ssh.pool import PoolHost
    from dstack.execution.ssh import SSHExecutor
    from dstack.home import Home
    from dstack.ssh.connect import HostAddress, connect
    from dstack.ssh.probe import probe
    from dstack.storage.manifest import StatCache
    from dstack.storage.store import Store

    names = ["; touch ran", "$(touch ran)", "`touch ran`", "it's 'single'", 'say "double"']
    names += ["back\\slash", "a\\\\b\\n", "sp ace  ", "star * ? [x]", "-dash"]
    home = Home(tmp_path / "home")
    home.root.mkdir()
    address = HostAddress(
        "box", sshd_local.host, sshd_local.port, sshd_local.user, str(sshd_local.key)
    )
    with connect(address, home.root / "known_hosts", pin=True) as conn:
        facts = probe(conn)
    job_dir = f"{facts.home}/inj-{os.getpid()}"
    for transfer in ("rsync", "sftp"):
        executor = SSHExecutor(
            PoolHost(address, 1, facts, 0.0),
            Store.open(home),
            home.root / "known_hosts",
            home,
            transfer=transfer,
        )
        script = 'mkdir -p out; for n in "$@"; do printf \'%s\' "$n" > "out/$n"; done'
        executor.remote.check(
            f"mkdir -p {job_dir}/work && cd {job_dir}/work && bash -c {shlex.quote(script)} _ "
            + " ".join(shlex.quote(n) for n in names)
        )
        try:
            entries = {e.path: e.sha256 for e in executor.collect(job_dir, ["out"], StatCache())}
        finally:
            executor.remote.check(f"rm -rf {job_dir}")
            executor.close()
        assert entries == {f"out/{n}": hashlib.sha256(n.encode()).hexdigest() for n in names}, (
            transfer
        )
    assert not Path("ran").exists(), "a name ran as a command here"


def test_variables_in_a_list_of_args_arrive_as_one_word_each(tmp_path: Path) -> None:
    project = Project(tmp_path / "repo", tmp_path / "home")
    project.write("show.py", SHOW)
    project.write(".dstack/variables.yaml", "variables:\n  name: my run; $(id)\n")
    project.workflows(
        """
        workflows:
          - name: listed
            provider: python
            script: show.py
            args: ["--name", "${{ name }}"]
          - name: text
            provider: python
            script: show.py
            args: --name ${{ name }}
        """
    )
    for job in ("listed", "text"):
        done = project.dstack("run", job, check=True)
        words = [bytes.fromhex(line.split()[1]).decode() for line in done.stdout.splitlines()]
        assert words == ["--name", "my run; $(id)"], (job, words)
