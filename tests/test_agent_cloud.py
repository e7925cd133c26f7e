"""Cloud hosts and the host agent: the VM's idle watchdog waits for the agent's seal, and the
run stacks' Pulumi state lives in the team's bucket, so a teammate's `dstack gc` destroys a
stack whose laptop went away, once its job ended and its data was sealed.

Real parts: the watchdog script run by bash with a real `flock` holder; sshd in a network
namespace (the stand-in `pulumi`'s VM) reaching SeaweedFS directly (the bucket, which also
holds the stand-in's stacks), and the dstack CLI in subprocesses for each home.
"""

from __future__ import annotations

import fcntl
import glob
import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import AgentLab, Project, wait_for
from test_agent import Bucket, gate_file, supervisor_pid
from test_buckets import new_bucket, use_s3
from test_clouds import job_status

from stacks.spec import AFTER_SEAL, IDLE_WATCHDOG, JOB_PIDS, HostSpec, startup_script

# the idle watchdog, run for real ----------------------------------------------------------


@dataclass
class Watchdog:
    """stacks/idle-off.sh under bash, with a stand-in `shutdown` that records its call and a
    `sleep` that counts the watchdog's rounds (and keeps them short)."""

    root: Path  # where / is for the job patterns
    bin: Path
    powered_off: Path
    rounds: Path
    proc: subprocess.Popen[str] | None = None

    def job(self) -> Path:
        """A job folder where a home's job lives on a host (dstack.execution.ssh.job_dir)."""
        folder = job_dir(self.root / "home" / "ubuntu")
        folder.mkdir(parents=True)
        return folder

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        script = self.root / "dstack-idle-off"
        script.write_text(IDLE_WATCHDOG)
        patterns = [str(self.root) + p for p in JOB_PIDS]
        environ = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", **(env or {})}
        self.proc = subprocess.Popen(
            ["bash", str(script), *args, *patterns],
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
        )

    def looked(self, times: int) -> bool:
        return self.rounds.exists() and len(self.rounds.read_text().splitlines()) > times

    def stays_up_for(self, times: int) -> None:
        wait_for(lambda: self.looked(times), what=f"the watchdog looking {times} times")
        assert not self.powered_off.exists(), "powered off too early"

    def powers_off(self) -> str:
        """Waits for the power-off; the watchdog's own line about it."""
        wait_for(self.powered_off.exists, what="the watchdog powering off")
        assert self.powered_off.read_text().strip() == "-h now"
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0
        return out


@pytest.fixture
def watchdog(tmp_path: Path) -> Iterator[Watchdog]:
    fake = tmp_path / "bin"
    fake.mkdir()
    made = Watchdog(tmp_path, fake, tmp_path / "powered-off", tmp_path / "rounds")
    (fake / "shutdown").write_text(f'#!/bin/sh\necho "$@" > {made.powered_off}\n')
    (fake / "sleep").write_text(f"#!/bin/sh\necho >> {made.rounds}\nexec /bin/sleep 0.05\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    yield made
    if made.proc is not None and made.proc.poll() is None:
        made.proc.kill()
        made.proc.communicate()


def job_dir(user_home: Path) -> Path:
    from dstack.execution.ssh import SSHExecutor

    executor = object.__new__(SSHExecutor)
    executor.runs = f"{user_home}/.dstack/runs/0123456789ab"
    return Path(executor.job_dir("swift-otter-12", "train"))


def ended_job(watchdog: Watchdog, state: str) -> Path:
    """A job that has ended (its exit code written) and whose agent last said ``state``."""
    job = watchdog.job()
    (job / "pid").write_text("999999999\n")  # no such process
    (job / "rc").write_text("0\n")
    (job / "agent-status.json").write_text(f'{{"version": 1, "state": "{state}"}}')
    return job


def held(lock: Path) -> bool:
    """Whether some process holds the agent's lock (asked without taking it for long)."""
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def test_the_watchdog_waits_while_the_agent_uploads_and_powers_off_after_the_seal(
    watchdog: Watchdog,
) -> None:
    """The job has ended, but its agent still holds the job's lock and has not sealed: the
    host stays up well past IDLE. Once the agent writes "sealed" and exits, it powers off."""
    job = ended_job(watchdog, "running")
    go, sealed = watchdog.root / "go", '{"version": 1, "state": "sealed"}'
    script = f"until [ -e {go} ]; do /bin/sleep 0.02; done; echo '{sealed}' > agent-status.json"
    # a real process holding agent.lock, as the agent does
    agent = subprocess.Popen(["flock", "agent.lock", "bash", "-c", script], cwd=job)
    try:
        wait_for(lambda: held(job / "agent.lock"), what="the stand-in agent holding its lock")
        watchdog.start("2", "1")
        watchdog.stays_up_for(8)  # idle would have run out after 2 looks
        assert agent.poll() is None
        go.touch()
        assert agent.wait(timeout=10) == 0
        said = watchdog.powers_off()
        assert "no dstack job for" in said
    finally:
        agent.kill()
        agent.wait()


def test_a_lock_file_that_no_process_holds_does_not_keep_the_host_up(watchdog: Watchdog) -> None:
    """An agent killed before its seal leaves agent.lock and an unsealed status behind: the
    watchdog does not wait for it for ever (the laptop saves the files itself, or not)."""
    job = ended_job(watchdog, "buffering")
    (job / "agent.lock").write_text("")
    watchdog.start("2", "1")
    watchdog.powers_off()


def test_a_running_job_keeps_the_host_up_whatever_its_agent_says(watchdog: Watchdog) -> None:
    job = watchdog.job()
    sleeper = subprocess.Popen(["/bin/sleep", "60"])
    try:
        (job / "pid").write_text(f"{sleeper.pid}\n")
        (job / "agent-status.json").write_text('{"state": "sealed"}')  # a stale status
        watchdog.start("2", "1", "--after-seal", "1")
        watchdog.stays_up_for(8)
        (job / "rc").write_text("0\n")
        watchdog.powers_off()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_after_the_seal_it_powers_off_soon_once_nobody_is_logged_in(
    watchdog: Watchdog,
) -> None:
    """IDLE is far away; every job is sealed. While an SSH session is open (an attached
    dstack, a teammate looking around) the host stays up; once it closes, it powers off
    after --after-seal seconds."""
    ended_job(watchdog, "sealed")
    marker = f"fake-sshd-{uuid.uuid4().hex[:8]}"
    session = subprocess.Popen(["bash", "-c", f"exec -a '{marker}: ubuntu@notty' /bin/sleep 60"])
    try:
        pattern = f"^{marker}: [^ /[]+( \\[priv\\]|@)"
        wait_for(
            lambda: subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0,
            what="the stand-in session listed",
        )
        watchdog.start("1000", "1", "--after-seal", "2", env={"DSTACK_IDLE_SESSIONS": pattern})
        watchdog.stays_up_for(8)
        session.kill()
        session.wait()
        said = watchdog.powers_off()
        assert "every job sealed and nobody logged in" in said
    finally:
        session.kill()
        session.wait()


def test_the_startup_script_watches_where_jobs_live(tmp_path: Path) -> None:
    """The patterns the VM's watchdog is given find a home's job folder (HOME-ID/RUN/JOB),
    and the after-seal rule is on."""
    for user_home in (tmp_path / "home" / "ubuntu", tmp_path / "root"):
        pid = job_dir(user_home) / "pid"
        pid.parent.mkdir(parents=True)
        pid.write_text("1\n")
        found = [f for p in JOB_PIDS for f in glob.glob(str(tmp_path) + p)]
        assert found == [str(pid)], (found, JOB_PIDS)
        pid.unlink()
    host = HostSpec(
        backend="aws",
        name="dstack-swift-otter-12-train",
        instance_type="t3.large",
        region="us-east-1",
        ssh_public_key="ssh-ed25519 AAAA test",
        allowed_cidr="198.51.100.7/32",
        shutdown_after_minutes=240,
        idle_minutes=30,
    )
    script = startup_script(host)
    assert f"--after-seal {AFTER_SEAL} " in script
    assert "/home/*/.dstack/runs/*/*/*/pid" in script
    assert len(script.encode()) < 16 * 1024, "AWS takes at most 16 KB of user data"


# the run stacks' state in the team's bucket -------------------------------------------------

STANDIN = Path(__file__).parent / "standin"
JOB = """
workflows:
  - name: train
    commands: [echo started, "until [ -e {gate} ]; do sleep 0.05; done",
               mkdir -p out, echo 42 > out/r.txt, echo finished]
    artifacts: [out]
    resources: {{gpu: {{name: T4, count: 1}}}}
"""


@dataclass
class Team:
    """Homes sharing one bucket store whose run stacks' state is in that bucket; the
    stand-in `pulumi`'s VM is the lab host, which writes to the bucket itself."""

    owner: Project
    others: list[Project]
    lab: AgentLab
    bucket: Bucket
    calls_log: Path
    gate: Path

    def stack_objects(self) -> list[str]:
        """The stand-in's stacks in the bucket (its DIY state, beside the store)."""
        return [
            k.rsplit("/", 1)[1][:-5]
            for k in self.bucket.keys("pulumi/.standin/")
            if k.endswith(".json") and "/locks/" not in k
        ]

    def destroys(self) -> int:
        lines = self.calls_log.read_text().splitlines() if self.calls_log.exists() else []
        return sum(1 for line in lines if line.split()[:1] == ["destroy"])

    def record(self, stack: str) -> dict[str, object]:
        raw = self.bucket.get(f"stacks/{stack}.json")
        return json.loads(raw) if raw else {}

    def start_job(self) -> tuple[str, str]:
        """Run the job detached, kill its supervisor (the laptop is gone), let the job end and
        its agent seal it; the run's name and its stack's."""
        self.owner.dstack("run", "train", "-y", "-d", check=True)
        run = self.owner.ps()[0]["name"]
        wait_for(lambda: b"started" in self.bucket.log(run, "train"), 120, what="the job running")
        wait_for(lambda: job_status(self.owner) == "running", 60, what="the job recorded")
        os.kill(supervisor_pid(self.owner, run), signal.SIGKILL)
        self.gate.touch()
        wait_for(
            lambda: self.bucket.status(run, "train").get("state") == "sealed", 60, what="the seal"
        )
        return run, f"dstack-{run}-train"


@pytest.fixture
def team(project: Project, agent_lab: AgentLab, tmp_path: Path) -> Iterator[Team]:
    name = new_bucket()
    use_s3(project, agent_lab.s3, name)
    url = f"s3://{name}/team"
    host = agent_lab.host
    network = ipaddress.IPv4Network(f"{host.host}/24", strict=False)
    config = project.home / "config.yaml"
    config.write_text(config.read_text() + f"backends:\n  aws: {{allowed_cidr: {network}}}\n")
    calls_log = tmp_path / "standin" / "calls.log"
    project.extra_env.update(
        {
            "PATH": f"{STANDIN}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "STANDIN_ADDRESS": host.host,
            "STANDIN_USER": host.user,
            "STANDIN_AUTHORIZED_KEYS": str(host.folder / "authorized_keys"),
            "STANDIN_LOCAL": str(calls_log.parent),  # one machine: one calls.log for all homes
            "DSTACK_GC_AFTER_SEAL": "0",
        }
    )
    others = []
    for index in (2, 3):
        other = Project(project.root, tmp_path / f"home{index}")
        other.extra_env = dict(project.extra_env)
        other.dstack("init", "--store", url, "--endpoint-url", agent_lab.s3.endpoint, check=True)
        others.append(other)
    gate = gate_file(agent_lab, tmp_path)
    project.workflows(JOB.format(gate=gate))
    yield Team(project, others, agent_lab, Bucket(agent_lab, name), calls_log, gate)
    for other in others:
        other.cleanup()


def stacks_rows(project: Project) -> list[str]:
    with sqlite3.connect(project.home / "state.db") as db:
        return [r[0] for r in db.execute("SELECT name FROM stacks")]


def test_a_teammates_gc_destroys_the_stack_of_a_run_whose_laptop_went_away(team: Team) -> None:
    run, stack = team.start_job()
    assert team.stack_objects() == [stack], "the stack's state is in the team's bucket"
    assert team.record(stack)["state"] == "live"
    assert team.bucket.get("pulumi/passphrase"), "the team's stacks' passphrase is there too"
    teammate = team.others[0]
    listed = json.loads(teammate.dstack("gc", "--dry-run", "--json", check=True).stdout)
    assert [(s["stack"], s["run"], s["status"]) for s in listed] == [(stack, run, "up")]
    assert "its host sealed its data" in listed[0]["why"]
    assert "1 cloud stack of ended runs may still cost money" in teammate.dstack("ps").stderr
    assert team.destroys() == 0, "--dry-run destroys nothing"

    done = teammate.dstack("gc")
    assert done.returncode == 0, done.stderr
    assert "Tore down 1 stack" in done.stderr
    assert team.destroys() == 1
    assert team.stack_objects() == []
    assert team.record(stack)["state"] == "destroyed", "a tombstone for the owner's home"
    keys = (team.lab.host.folder / "authorized_keys").read_text()
    assert f"dstack-{run}" not in keys, "the VM is gone with its stack"

    # the owner comes back: its next command finishes the job from the store, tries nothing
    listed = team.owner.ps()
    assert [(r["name"], r["status"]) for r in listed] == [(run, "done")], team.owner.inspect(run)
    shown = team.owner.dstack("ps", check=True)
    assert "may still cost money" not in shown.stderr, "its stack is known to be gone"
    assert team.destroys() == 1 and stacks_rows(team.owner) == []
    assert team.bucket.get(f"stacks/{stack}.json") is None, "the tombstone is noted and gone"
    assert "finished" in team.owner.dstack("logs", run, check=True).stdout
    files = json.loads(team.owner.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert [f["path"] for f in files["train"]["files"]] == ["out/r.txt"]
    gc = team.owner.dstack("gc", check=True)
    assert "No stack is left behind" in gc.stderr and team.destroys() == 1


def test_two_homes_collecting_at_once_destroy_the_stack_once(team: Team) -> None:
    run, stack = team.start_job()
    for other in team.others:  # each destroy takes a while: the other home finds it busy
        other.extra_env["STANDIN_SLOW"] = "destroy:2"
    procs = [other.popen("gc") for other in team.others]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert team.destroys() == 1, team.calls_log.read_text()
    assert team.stack_objects() == []
    said = "\n".join(err for _, err in results)
    assert "was torn down by another home" in said or "No stack is left behind" in said
    assert [r["status"] for r in team.owner.ps()] == ["done"], team.owner.inspect(run)
    team.owner.dstack("ps", check=True)  # its stack's tombstone is noted
    assert team.destroys() == 1 and stacks_rows(team.owner) == []


def test_a_stack_locked_by_another_update_is_waited_for_not_failed(team: Team) -> None:
    """The engine's lock (another process's update under way) means someone else is on the
    stack: gc waits for it, then destroys what is left."""
    _, stack = team.start_job()
    lock = f"pulumi/.standin/locks/{stack}.json"
    team.bucket.client.put_object(Bucket=team.bucket.name, Key=f"team/{lock}", Body=b"{}")
    proc = team.others[0].popen("gc")
    wait_for(
        lambda: "locked destroy" in team.calls_log.read_text(),
        60,
        what="a destroy finding the lock",
    )
    assert proc.poll() is None, "it waits for the lock rather than fail"
    team.bucket.client.delete_object(Bucket=team.bucket.name, Key=f"team/{lock}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "is being updated elsewhere" in err and "Waiting for it" in err
    assert team.stack_objects() == []


def test_a_run_on_a_shared_store_keeps_its_stack_in_the_bucket_and_cleans_up_after_itself(
    team: Team,
) -> None:
    """The owner's own teardown: a run refused at review and a run that ends normally each
    leave no stack state, no stack record and nothing for a teammate's gc."""
    refused = team.owner.dstack("run", "train")  # no terminal, no -y: withdrawn after preview
    assert refused.returncode == 2, refused.stderr
    assert team.stack_objects() == [] and team.bucket.keys("stacks/") == []
    team.gate.touch()
    done = team.owner.dstack("run", "train", "-y")
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout
    run = team.owner.last_run()["name"]
    assert team.bucket.status(run, "train")["state"] == "sealed", "its host's agent saved it"
    assert team.destroys() == 2 and team.stack_objects() == []
    assert team.bucket.keys("stacks/") == [] and stacks_rows(team.owner) == []
    assert "No stack is left behind" in team.others[0].dstack("gc", check=True).stderr
    assert team.destroys() == 2
