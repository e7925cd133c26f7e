"""The cloud lifecycle end to end: `dstack run` records, previews, confirms, creates, runs the
job over real SSH, and destroys, against the stand-in `pulumi` (tests/standin/pulumi).

The stand-in's "VM" is a real sshd in a network namespace (its own /24): `up` installs the
run's key there as cloud-init would and `destroy` removes it, so the job really runs through
the SSH executor on the address the stack reports. Failures are injected per step."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, wait_for
from sshd import SSHServer
from test_ssh_run import home_id

STANDIN = Path(__file__).parent / "standin"
GPU_JOB = """
    workflows:
      - name: train
        commands: [{commands}]
        artifacts: [out]
        resources:
          gpu: {{name: T4, count: 1}}
"""


def gpu_workflow(project: Project, *commands: str) -> None:
    project.workflows(GPU_JOB.format(commands=", ".join(json.dumps(c) for c in commands)))


def network(server: SSHServer) -> ipaddress.IPv4Network:
    """The /24 the namespace host's address is in (the test session chose a free one)."""
    return ipaddress.IPv4Network(f"{server.host}/24", strict=False)


@pytest.fixture
def cloud(project: Project, sshd_hosts: list[SSHServer]) -> Project:
    """A project whose config allows AWS from the host's /24, with the stand-in `pulumi` first
    on PATH."""
    host = sshd_hosts[0]
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(
        f"backends:\n  aws:\n    allowed_cidr: {network(host)}\n    max_instances: 1\n"
    )
    project.extra_env = {
        "PATH": f"{STANDIN}:{os.environ['PATH']}",
        "STANDIN_ADDRESS": host.host,
        "STANDIN_USER": host.user,
        "STANDIN_AUTHORIZED_KEYS": str(host.folder / "authorized_keys"),
    }
    return project


def standin_dir(project: Project) -> Path:
    return project.home / "pulumi" / "state" / ".standin"


def calls(project: Project) -> list[str]:
    log = standin_dir(project) / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def verbs(project: Project) -> list[str]:
    """The lifecycle steps the stand-in saw, in order (preview, up, destroy, rm)."""
    kept = []
    for line in calls(project):
        words = line.split()
        if words[0] in ("preview", "up", "destroy"):
            kept.append(words[0])
        elif words[:2] == ["stack", "rm"]:
            kept.append("rm")
    return kept


def stacks_left(project: Project) -> list[str]:
    """Stacks in the Pulumi backend and rows in dstack's state: both must end empty."""
    files = [p.stem for p in standin_dir(project).glob("dstack-*.json")]
    with sqlite3.connect(project.home / "state.db") as db:
        rows = [r[0] for r in db.execute("SELECT name FROM stacks")]
    return files + rows


def job_status(project: Project) -> str | None:
    try:
        with sqlite3.connect(project.home / "state.db") as db:
            row = db.execute("SELECT status FROM jobs ORDER BY rowid DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return None
    return row[0] if row else None


def assert_torn_down(project: Project, server: SSHServer) -> None:
    assert stacks_left(project) == []
    keys = (server.folder / "authorized_keys").read_text()
    assert "dstack-" not in keys, "the run's key is gone from the host with its stack"
    assert not list((project.home / "keys").glob("*")), "the run's key pair is deleted"


def test_gpu_job_runs_on_a_created_host_and_its_stack_is_destroyed(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    gpu_workflow(cloud, "echo on $(whoami)", "mkdir -p out && echo 42 > out/r.txt")
    done = cloud.dstack("run", "train", "-y")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"on {sshd_hosts[0].user}\n"
    sdk = importlib.metadata.version("pulumi_aws")  # the plug-in matches the installed SDK
    assert done.stderr.startswith(f"dstack: installing the Pulumi aws plug-in {sdk} (once)\n")
    review = done.stderr[done.stderr.index("Run ") :].partition("\nRun ")[0]
    assert "needs cloud hosts (preview by the Pulumi engine)" in review
    assert "train: aws g4dn.xlarge in us-east-1, 1x T4" in review
    assert "$0.526/h; at most $12.62" in review
    assert "+ aws:ec2/securityGroup:SecurityGroup" in review
    assert f"from: {network(sshd_hosts[0])}" in review, "SSH is open only to the configured range"
    assert "key: <this run's key>" in review
    assert max(len(line) for line in review.splitlines()) <= 80, review
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"]
    run = cloud.last_run()["name"]
    job = cloud.inspect(run)["jobs"][0]
    assert (job["backend"], job["host"]) == ("aws", f"dstack-{run}-train")
    files = json.loads(cloud.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert [f["path"] for f in files["train"]["files"]] == ["out/r.txt"]
    assert_torn_down(cloud, sshd_hosts[0])
    passphrase = cloud.home / "pulumi" / "passphrase"
    assert passphrase.stat().st_mode & 0o777 == 0o600
    again = cloud.dstack("rerun", run, "-y")
    assert again.returncode == 0 and again.stdout == done.stdout, again.stderr
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"] * 2, "a new host for the rerun"
    assert "plug-in" not in again.stderr, "installed once"
    assert_torn_down(cloud, sshd_hosts[0])


def test_without_a_terminal_or_yes_nothing_is_created(cloud: Project) -> None:
    gpu_workflow(cloud, "echo hi")
    done = cloud.dstack("run", "train")
    assert done.returncode == 2
    assert "there is no terminal to ask on" in done.stderr
    assert "Hint: add -y" in done.stderr
    assert "Traceback" not in done.stderr
    assert verbs(cloud) == ["preview", "destroy", "rm"]
    assert stacks_left(cloud) == [] and cloud.ps() == []


def test_no_pulumi_on_path_is_a_clear_error_before_anything_is_recorded(
    cloud: Project,
) -> None:
    gpu_workflow(cloud, "echo hi")
    env = cloud.env(PATH="/usr/bin:/bin")
    done = cloud.dstack("run", "train", "-y", env=env)
    assert done.returncode == 1
    assert "there is no `pulumi` on PATH" in done.stderr
    assert "get.pulumi.com" in done.stderr and "Traceback" not in done.stderr
    assert cloud.ps() == []


def test_up_failing_halfway_destroys_what_was_created(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    gpu_workflow(cloud, "echo never")
    cloud.extra_env["STANDIN_FAIL"] = "up:halfway"
    done = cloud.dstack("run", "train", "-y")
    assert done.returncode != 0
    assert "InsufficientInstanceCapacity" in done.stderr
    assert "never" not in done.stdout
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"]
    assert_torn_down(cloud, sshd_hosts[0])
    assert cloud.last_run()["status"] == "failed"


def test_a_failing_job_still_destroys_its_host(cloud: Project, sshd_hosts: list[SSHServer]) -> None:
    gpu_workflow(cloud, "mkdir -p out && echo partial > out/p.txt", "exit 3")
    done = cloud.dstack("run", "train", "-y")
    assert done.returncode == 3
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"]
    assert_torn_down(cloud, sshd_hosts[0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_job_runs_destroys_the_host(
    cloud: Project, sshd_hosts: list[SSHServer], signum: int
) -> None:
    gpu_workflow(cloud, "echo started", "sleep 60")
    proc = cloud.popen("run", "train", "-y")
    wait_for(lambda: job_status(cloud) == "running", 60)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "tearing down" in err
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"]
    assert_torn_down(cloud, sshd_hosts[0])
    assert cloud.last_run()["status"] == "stopped"


def test_gc_destroys_the_stack_of_a_killed_supervisor(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    gpu_workflow(cloud, "sleep 2", "mkdir -p out && echo ok > out/r.txt")
    cloud.dstack("run", "train", "-y", "-d", check=True)
    run = cloud.last_run()["name"]
    wait_for(lambda: job_status(cloud) == "running", 60)
    with sqlite3.connect(cloud.home / "state.db") as db:
        (pid,) = db.execute("SELECT supervisor_pid FROM runs WHERE name = ?", (run,)).fetchone()
    os.kill(pid, signal.SIGKILL)
    rc = sshd_hosts[0].home / ".dstack" / "runs" / home_id(cloud) / run / "train" / "rc"
    wait_for(rc.exists, 60, what="the job ending on the host")  # nothing tears its stack down
    listed = cloud.dstack("gc", "--dry-run", "--json", check=True)
    found = json.loads(listed.stdout)
    assert [(s["stack"], s["status"]) for s in found] == [(f"dstack-{run}-train", "up")]
    assert found[0]["why"] == "its run is done"
    assert stacks_left(cloud) != [], "--dry-run destroys nothing"
    done = cloud.dstack("gc", check=True)
    assert "Tore down 1 stack" in done.stderr
    assert_torn_down(cloud, sshd_hosts[0])
    files = json.loads(cloud.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert [f["path"] for f in files["train"]["files"]] == ["out/r.txt"], "artifacts kept"
    assert "No stack is left behind" in cloud.dstack("gc", check=True).stderr


def test_a_failed_teardown_is_kept_for_gc(cloud: Project, sshd_hosts: list[SSHServer]) -> None:
    gpu_workflow(cloud, "echo ok")
    cloud.extra_env["STANDIN_FAIL"] = "destroy:once"
    done = cloud.dstack("run", "train", "-y")
    assert done.returncode == 0, "the job succeeded; its teardown is what failed"
    assert "RequestLimitExceeded" in done.stderr
    assert "`dstack gc` tries again" in done.stderr
    found = json.loads(cloud.dstack("gc", "--dry-run", "--json", check=True).stdout)
    assert [s["status"] for s in found] == ["leaked"]
    assert "1 cloud stack of ended runs may still cost money" in cloud.dstack("ps").stderr
    assert "RequestLimitExceeded" in found[0]["why"]
    cloud.dstack("gc", check=True)
    assert_torn_down(cloud, sshd_hosts[0])


def test_max_instances_holds_across_concurrent_runs(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    gpu_workflow(cloud, "sleep 1", "echo done")
    procs = [cloud.popen("run", "train", "-y") for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert any(
        "waiting for a free aws instance (all 1 of aws's max_instances in use)" in err
        for _, err in results
    )
    held, most = 0, 0
    for verb in verbs(cloud):
        held += {"up": 1, "destroy": -1}.get(verb, 0)
        most = max(most, held)
    assert verbs(cloud).count("up") == 2 and most == 1, verbs(cloud)
    assert_torn_down(cloud, sshd_hosts[0])


def test_gc_with_nothing_left(cloud: Project) -> None:
    done = cloud.dstack("gc")
    assert done.returncode == 0 and "No stack is left behind" in done.stderr
    assert json.loads(cloud.dstack("gc", "--json", check=True).stdout) == []


def test_a_run_pinned_to_this_machine_never_touches_a_cloud(cloud: Project) -> None:
    cloud.workflows("workflows:\n  - {name: small, commands: [echo here]}\n")
    done = cloud.dstack("run", "small")
    assert done.returncode == 0 and done.stdout == "here\n"
    assert calls(cloud) == []


def ctrl_c_run(project: Project) -> subprocess.Popen[str]:
    """`dstack run` in a process group of its own, so that a Ctrl-C can be sent the way a
    terminal sends it: to dstack and to every child in its group (the `pulumi` CLI too)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack", "run", "train", "-y"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    project.procs.append(proc)
    return proc


@pytest.mark.parametrize(
    ("slow", "step_seen"),
    [("preview:20", "preview"), ("up:5", "up"), ("destroy:3", "destroy")],
    ids=["during-preview", "during-up", "during-destroy"],
)
def test_ctrl_c_at_each_lifecycle_step_leaves_no_stack(
    cloud: Project, sshd_hosts: list[SSHServer], slow: str, step_seen: str
) -> None:
    gpu_workflow(cloud, "echo ran")
    cloud.extra_env["STANDIN_SLOW"] = slow
    proc = ctrl_c_run(cloud)
    wait_for(lambda: f"slow {step_seen}" in calls(cloud), 60, what=f"the stand-in in {step_seen}")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert "Traceback" not in err
    assert_torn_down(cloud, sshd_hosts[0])
    assert verbs(cloud)[-2:] == ["destroy", "rm"], verbs(cloud)
    if step_seen == "preview":  # nothing was created: the run is withdrawn
        assert proc.returncode == 130 and cloud.ps() == []
    if step_seen == "destroy":  # the job had finished; the teardown went on through Ctrl-C
        assert proc.returncode == 0, err
        assert "still tearing down" in err


def test_plan_previews_with_the_engine_when_pulumi_is_there(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    gpu_workflow(cloud, "echo hi")
    report = json.loads(cloud.dstack("plan", "train", "--json", check=True).stdout)
    assert report["preview"] == "engine"
    by_type = {r["type"]: r["inputs"] for r in report["jobs"][0]["resources"]}
    rule = by_type["aws:ec2/securityGroup:SecurityGroup"]["from"]
    assert rule == str(network(sshd_hosts[0])), "the configured allowed_cidr, as the stack gets it"
    assert by_type["aws:ec2/keyPair:KeyPair"]["key"] == "<per-run key>"
    assert verbs(cloud) == ["preview", "rm"], "a throw-away stack, removed"
    assert stacks_left(cloud) == []
    text = cloud.dstack("plan", "train", check=True).stdout
    assert "(preview by the Pulumi engine: nothing is created)" in text


def test_plan_falls_back_to_the_offline_preview_when_the_engine_fails(cloud: Project) -> None:
    gpu_workflow(cloud, "echo hi")
    cloud.extra_env["STANDIN_FAIL"] = "preview"
    done = cloud.dstack("plan", "train", "--json", check=True)
    assert json.loads(done.stdout)["preview"] == "offline"
    assert "The engine's preview failed" in done.stderr and "no credentials" in done.stderr
    assert stacks_left(cloud) == []


def test_a_configured_state_backend_is_used(cloud: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "team-state"
    elsewhere.mkdir()
    config = cloud.home / "config.yaml"
    config.write_text(config.read_text() + f"pulumi:\n  backend_url: {elsewhere.as_uri()}\n")
    gpu_workflow(cloud, "echo hi")
    cloud.dstack("run", "train", "-y", check=True)
    assert (elsewhere / ".standin" / "calls.log").exists()
    assert not (cloud.home / "pulumi" / "state").exists()


def test_a_cloud_backend_not_set_up_is_refused_by_name(project: Project) -> None:
    gpu_workflow(project, "echo hi")
    for command in ("run", "plan"):
        done = project.dstack(command, "train", "--backend", "gcp")
        assert done.returncode == 2, done.stderr
        assert "--backend gcp: gcp is not set up in" in done.stderr
        assert "dstack offers --backend gcp" in done.stderr


def test_independent_jobs_get_their_hosts_created_in_parallel(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    config = cloud.home / "config.yaml"
    config.write_text(config.read_text().replace("max_instances: 1", "max_instances: 2"))
    gpu = "resources: {gpu: {name: T4, count: 1}}"
    cloud.workflows(f"""
        workflows:
          - {{name: a, commands: [echo a], {gpu}}}
          - {{name: b, commands: [echo b], {gpu}}}
          - {{name: both, depends-on: [a, b], commands: [echo both]}}
    """)
    cloud.extra_env["STANDIN_SLOW"] = "up:1"
    done = cloud.dstack("run", "both", "-y")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["a | a", "b | b", "both | both"]
    ups = [line.split()[0] for line in calls(cloud) if line.startswith("up")]
    assert ups == ["up", "up", "up-done", "up-done"], "both created at once, not in turn"
    assert_torn_down(cloud, sshd_hosts[0])


def test_a_host_that_never_answers_ssh_is_given_up_and_destroyed(
    cloud: Project, sshd_hosts: list[SSHServer]
) -> None:
    config = cloud.home / "config.yaml"
    config.write_text(config.read_text() + "    boot_timeout: 3\n")
    gpu_workflow(cloud, "echo never")
    cloud.extra_env["STANDIN_ADDRESS"] = str(network(sshd_hosts[0])[99])  # nobody answers there
    done = cloud.dstack("run", "train", "-y")
    assert done.returncode == 1
    assert "did not answer SSH within 3 s" in done.stderr
    assert verbs(cloud) == ["preview", "up", "destroy", "rm"]
    assert_torn_down(cloud, sshd_hosts[0])


# Each racer says it is ready (dstack imported), then waits for the start signal.
RACER = (
    "import os, sys, time; from pathlib import Path; from dstack.home import Home; "
    "from dstack.backends.cloud.automation import passphrase_file\n"
    "home, go, ready = map(Path, sys.argv[1:])\n"
    "ready.touch()\n"
    "deadline = time.monotonic() + 60\n"
    "while not go.exists() and time.monotonic() < deadline:\n"
    "    time.sleep(0.0005)\n"
    "print(passphrase_file(Home(home)).read_text().strip())"
)


def race_for_passphrase(home: Path, folder: Path, racers: int) -> list[str]:
    """Start ``racers`` processes on one new home at the same moment; their passphrases."""
    go, ready = folder / "go", [folder / f"ready{i}" for i in range(racers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(home), str(go), str(flag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    wait_for(lambda: all(f.exists() for f in ready), 60, what="every racer ready")
    go.touch()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * racers, [err for _, err in results]
    return [out.strip() for out, _ in results]


def test_dstack_processes_starting_at_once_agree_on_one_passphrase(tmp_path: Path) -> None:
    """The stack secrets' passphrase is made by whichever process comes first; the others,
    racing it, must neither fail nor read a half-written file."""
    for round in range(5):
        home, folder = tmp_path / f"home{round}", tmp_path / f"race{round}"
        folder.mkdir()
        seen = set(race_for_passphrase(home, folder, 8))
        assert len(seen) == 1 and len(seen.pop()) >= 40
        assert (home / "pulumi" / "passphrase").stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in (home / "pulumi").iterdir()) == ["passphrase"]
