"""Many hands at once: three homes (two on one repository, one on another) start runs together
on one pool host they reach as the same SSH user, all saving to one bucket. Every run must
succeed, every artifact must come back byte-identical in another home, no temporary file may be
left on the host, in the bucket or in a home, and `dstack fsck` must find nothing corrupt; the
same after a writer is killed mid-upload and while the store stops answering for a moment.

The long, repeated rounds (and 1 home next to 3) are bench/bench_concurrency.py, on this Team."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from buckets import SeaweedS3
from conftest import Project, wait_for
from sshd import BASE, SSHServer, add_netns, make_server
from test_buckets import new_bucket, use_s3

from dstack.storage.blobs import CHUNK_SIZE, chunk_tree

HOST_INDEX = 3  # the shared host's namespace; sshd_hosts takes 1 and 2
# what a writer names a file before it is complete: dstack's temporaries (a venv's
# `.dstack-ready` marker is no temporary) and the old `.part` of a host upload
TEMP = re.compile(r"^\.tmp-|^\.dstack-(?!ready$)|\.part$")
SHARED_SIZE, MINE_SIZE, BIG_SIZE = 1024**2, 256 * 1024, 24 * 1024**2
WORKFLOWS = """
workflows:
  - name: same
    commands: ['mkdir -p out && cp shared.bin mine.bin out/']
    artifacts: [out]
  - name: unique
    commands:
      - mkdir -p out && head -c 300000 /dev/urandom > out/rand.bin
      - sha256sum out/rand.bin > out/rand.sha
    artifacts: [out]
  - name: py
    provider: python
    script: job.py
    requirements: req.txt
    artifacts: [out]
  - name: big
    deps: [{tag: big}]
    commands: [sha256sum weights/model.bin]
  - name: hold
    commands:
      - touch GATE/ready.$$
      - until [ -e GATE/go ]; do sleep 0.05; done
      - mkdir -p out && head -c 300000 /dev/urandom > out/rand.bin
      - sha256sum out/rand.bin > out/rand.sha
    artifacts: [out]
"""
JOB_PY = """
import hashlib, pathlib, sys
pathlib.Path("out").mkdir(exist_ok=True)
where = sys.prefix.split("/.dstack/")[1].split("/")[0]
digest = hashlib.sha256(pathlib.Path("shared.bin").read_bytes()).hexdigest()
pathlib.Path("out/py.txt").write_text(f"{where} {digest}\\n")
"""
DOWNLOAD = """
import sys, dstack
for name in sys.argv[2:]:
    dstack.Run(name).download(f"{sys.argv[1]}/{name}")
"""
# one round: each home starts two runs of the same files, one of new content, one that needs
# the cached Python environment (the same one for all)
EACH_HOME = ("py", "same", "same", "unique")
BUILDING = "building the Python environment"


@dataclass
class Started:
    home: int
    workflow: str
    proc: subprocess.Popen[str]


@dataclass
class Outcome:
    home: int
    workflow: str
    run: str | None
    code: int | None  # None: it did not end in time (killed then)
    out: str
    err: str

    def describe(self) -> str:
        last = self.err.strip().splitlines()[-3:]
        return f"home {self.home} {self.workflow} {self.run}: exit {self.code}: {' | '.join(last)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Team:
    """Homes sharing one bucket and one pool host `box` (the same SSH user for all): homes 0
    and 1 on repository a, home 2 on repository b."""

    def __init__(
        self, root: Path, homes: int, host: SSHServer, server: SeaweedS3, slots: int
    ) -> None:
        self.host, self.server, self.bucket = host, server, new_bucket()
        self.gate = Path(tempfile.mkdtemp(dir=BASE, prefix="gate-"))
        os.chmod(self.gate, 0o777)  # the host user marks its arrival in it
        self.repos = [root / "repo-a", root / "repo-b"]
        self.homes = [
            Project(self.repos[0 if i < 2 else 1], root / f"home-{i}") for i in range(homes)
        ]
        self.shared, self.mine = b"", [b"", b""]
        self.new_content()
        for home in self.homes:
            use_s3(home, server, self.bucket)
            home.dstack(*host.pool_add_args("box"), "--slots", str(slots), check=True)

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        """No run of any home is left going; the gate is removed."""
        for home in self.homes:
            home.cleanup()
        shutil.rmtree(self.gate, ignore_errors=True)

    def repo_of(self, home: int) -> int:
        return self.repos.index(self.homes[home].root)

    def new_content(self) -> None:
        """Fresh files: shared.bin the same in both repositories, mine.bin in each its own."""
        self.shared = os.urandom(SHARED_SIZE)
        self.mine = [os.urandom(MINE_SIZE), os.urandom(MINE_SIZE)]
        for repo, mine in zip(self.repos, self.mine, strict=True):
            (repo / ".dstack").mkdir(parents=True, exist_ok=True)
            (repo / ".dstack" / "workflows.yaml").write_text(
                WORKFLOWS.replace("GATE", str(self.gate))
            )
            (repo / "job.py").write_text(JOB_PY)
            (repo / "req.txt").write_text("# nothing to install\n")
            (repo / "shared.bin").write_bytes(self.shared)
            (repo / "mine.bin").write_bytes(mine)

    def cold(self, venvs: bool = True) -> None:
        """Empty the host's blob cache (and its Python environments)."""
        for name in ("blobs", "venvs") if venvs else ("blobs",):
            shutil.rmtree(self.host.home / ".dstack" / name, ignore_errors=True)

    def add_big(self) -> str:
        """Tag `big`: one file of BIG_SIZE in the bucket, for the `big` workflow; its sha256."""
        data = os.urandom(BIG_SIZE)
        weights = self.repos[0] / "weights"
        weights.mkdir(exist_ok=True)
        (weights / "model.bin").write_bytes(data)
        self.homes[0].dstack("tags", "add", "big", "-a", "weights", "--move", check=True)
        shutil.rmtree(weights)  # not part of later snapshots
        return sha256(data)

    def start(self, plan: list[tuple[int, str]]) -> list[Started]:
        """Start every (home, workflow) of ``plan`` at once, each a `dstack run` of its own."""
        return [Started(h, wf, self.homes[h].popen("run", wf, "--host", "box")) for h, wf in plan]

    def finish(self, started: list[Started], within: float = 240) -> list[Outcome]:
        """Wait for every run; one that has not ended ``within`` seconds is killed and said so."""
        deadline = time.monotonic() + within
        outcomes = []
        for one in started:
            try:
                out, err = one.proc.communicate(timeout=max(deadline - time.monotonic(), 1))
                code: int | None = one.proc.returncode
            except subprocess.TimeoutExpired:
                one.proc.kill()
                out, err = one.proc.communicate()
                code, err = None, err + f"\n(did not end within {within} s)"
            outcomes.append(Outcome(one.home, one.workflow, run_name(err), code, out, err))
        return outcomes

    def round(self, plan: list[tuple[int, str]]) -> list[Outcome]:
        return self.finish(self.start(plan))

    def plan(self, each_home: tuple[str, ...] = EACH_HOME) -> list[tuple[int, str]]:
        return [(h, wf) for wf in each_home for h in range(len(self.homes))]

    def statuses(self, home: int) -> dict[str, str]:
        return {r["name"]: r["status"] for r in self.homes[home].ps()}

    def problems(self, outcomes: list[Outcome], big: str = "") -> list[str]:
        """What is wrong with the runs that succeeded: each one's artifacts, downloaded in
        another home, must be what its job wrote; `big` must have seen the whole file."""
        ended = [o for o in outcomes if o.code == 0 and o.run]
        saw = [o for o in ended if o.workflow == "big" and o.out.split()[:1] != [big]]
        found = [f"{o.run}: the big file was {o.out!r}" for o in saw]
        readers: dict[int, list[Outcome]] = {}
        for o in ended:
            if o.workflow != "big":
                readers.setdefault((o.home + 1) % len(self.homes), []).append(o)
        with ThreadPoolExecutor(len(self.homes)) as pool:
            for wrong in pool.map(lambda item: self._download(*item), readers.items()):
                found += wrong
        return found

    def _download(self, reader: int, outcomes: list[Outcome]) -> list[str]:
        """The runs' files, downloaded in home ``reader`` through the Python API (one process
        for all), next to what each job wrote."""
        home = self.homes[reader]
        target = Path(tempfile.mkdtemp(prefix="dl-", dir=home.home.parent))
        names = [str(o.run) for o in outcomes]
        try:
            done = subprocess.run(
                [sys.executable, "-c", DOWNLOAD, str(target), *names],
                cwd=home.root,
                env=home.env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                return [f"download in home {reader} failed: {done.stderr.strip()[-600:]}"]
            wrong = []
            for o in outcomes:
                folder = target / str(o.run) / "out"
                files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in walk(folder)}
                if files != self._expected(o, files):
                    wrong.append(f"{o.run} ({o.workflow}) in home {reader}: {sorted(files)}")
            return wrong
        finally:
            shutil.rmtree(target)

    def _expected(self, o: Outcome, files: dict[str, bytes]) -> dict[str, bytes]:
        if o.workflow == "same":
            return {"shared.bin": self.shared, "mine.bin": self.mine[self.repo_of(o.home)]}
        if o.workflow == "py":
            return {"py.txt": f"venvs {sha256(self.shared)}\n".encode()}
        data = files.get("rand.bin", b"")  # written on the host; its digest was taken there
        return {"rand.bin": data, "rand.sha": f"{sha256(data)}  out/rand.bin\n".encode()}

    def leftovers(self) -> list[str]:
        """Temporary files anywhere: the host's ~/.dstack, each home, the bucket (its keys and
        unfinished multipart uploads)."""
        found = [p for p in walk(self.host.home / ".dstack") if TEMP.search(p.name)]
        for home in self.homes:
            found += [p for p in walk(home.home) if TEMP.search(p.name)]
        names = [str(p) for p in found]
        client = self.server.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            names += [o["Key"] for o in page.get("Contents", []) if TEMP.search(o["Key"])]
        uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return names + [f"unfinished upload {u['Key']}" for u in uploads]

    def damaged_blobs(self) -> list[str]:
        """Blobs in the host's cache whose content is not what their name says (the sha256
        of the file, or of its 32 MiB chunks' digests)."""
        damaged = []
        for path in walk(self.host.home / ".dstack" / "blobs"):
            if not re.fullmatch(r"[0-9a-f]{64}", path.name):
                continue
            data = path.read_bytes()
            chunks = [sha256(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]
            if path.name not in (sha256(data), chunk_tree(chunks)):
                damaged.append(path.name)
        return damaged

    def fsck(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.homes[0].dstack("fsck", "--json", *args, timeout=180)


def walk(folder: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(folder) for n in names]


def run_name(err: str) -> str | None:
    found = re.search(r"^Run (\S+): ", err, re.M)
    return found.group(1) if found else None


def assert_all_done(team: Team, outcomes: list[Outcome]) -> None:
    failed = [o.describe() for o in outcomes if o.code != 0 or not o.run]
    assert not failed, "\n".join(failed)
    runs = {str(o.run) for o in outcomes}
    for home in range(len(team.homes)):  # each sees every run, its own and through the bucket
        listed = team.statuses(home)
        assert {r: listed.get(r) for r in runs} == dict.fromkeys(runs, "done"), f"home {home}"


def assert_clean(team: Team) -> None:
    assert team.leftovers() == []
    assert team.damaged_blobs() == []
    checked = team.fsck()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    json.loads(checked.stdout)


@contextmanager
def own_host(index: int = HOST_INDEX) -> Iterator[SSHServer]:
    """A server alone in a new network namespace, whose one user every home logs in as;
    the server, its user and the namespace are removed after."""
    space = add_netns(index)
    try:
        server = make_server(f"shared{index}", "dstackshared", space.inside, netns=space.name)
        try:
            yield server
        finally:
            server.stop()
    finally:
        space.delete()


@pytest.fixture(scope="module")
def shared_host() -> Iterator[SSHServer]:
    with own_host() as server:
        yield server


@pytest.fixture(scope="module")
def team(
    shared_host: SSHServer, s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Team]:
    """Three homes on one bucket and the shared host; three slots each: of four runs a home
    starts at once, one waits for a slot."""
    with Team(tmp_path_factory.mktemp("team"), 3, shared_host, s3_server, slots=3) as made:
        yield made


def test_runs_started_at_once_from_three_homes_all_succeed_and_leave_nothing(team: Team) -> None:
    for cold_env in (True, False):  # the second round finds the environment built
        team.new_content()
        team.cold(venvs=cold_env)
        outcomes = team.round(team.plan())
        assert_all_done(team, outcomes)
        builds = [o.run for o in outcomes if o.workflow == "py" and BUILDING in o.out]
        assert len(builds) == (1 if cold_env else 0), "built once, used by every job after"
        assert team.problems(outcomes) == []
        assert_clean(team)


def partial_upload(blobs: Path) -> str | None:
    """A file going up to the host's blob cache, more of it there than any small file holds."""
    for path in blobs.glob("*") if blobs.is_dir() else []:
        try:
            if (
                not re.fullmatch(r"[0-9a-f]{64}", path.name)
                and path.stat().st_size > 2 * SHARED_SIZE
            ):
                return path.name
        except FileNotFoundError:  # renamed into place meanwhile
            continue
    return None


def kill_mid_upload(team: Team) -> tuple[str, str]:
    """Start `big` in home 0 and SIGKILL its `dstack run` (its supervisor) while the big file
    goes up to the host; wait for the run to be shown ended. (Its name, the partial file's.)"""
    victim = team.start([(0, "big")])[0]
    blobs = team.host.home / ".dstack" / "blobs"
    partial = wait_for(lambda: partial_upload(blobs), timeout=60, interval=0.01, what="upload")
    victim.proc.send_signal(signal.SIGKILL)
    _, err = victim.proc.communicate()
    run = run_name(err)
    assert run, err

    def given_up() -> bool:
        return team.statuses(0).get(str(run)) in ("failed", "stopped")

    wait_for(given_up, timeout=60, interval=0.2, what=f"the killed run {run} shown ended")
    return run, str(partial)


# after a writer was killed: the same blob from every home at once, and every slot of home 0
AFTER_KILL = [(0, "big"), (1, "big"), (2, "big"), (0, "same"), (0, "unique"), (1, "same")]


def test_writer_killed_mid_upload_fails_its_run_and_the_next_runs_succeed(team: Team) -> None:
    team.new_content()
    team.cold(venvs=False)
    big = team.add_big()
    _, partial = kill_mid_upload(team)
    outcomes = team.round(AFTER_KILL)
    assert_all_done(team, outcomes)
    assert team.problems(outcomes, big) == []
    found = team.fsck("--stale-after", "0")  # by default only what is old counts as left
    assert found.returncode == 0, found.stdout + found.stderr
    assert partial in found.stdout, "the killed upload is listed as left over"
    repaired = team.fsck("--repair", "--stale-after", "0")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert_clean(team)


def waiting_at(port: int, pids: list[int]) -> bool:
    """Whether each process has sent a request that the server on ``port`` has not read: a
    connection of the process whose server end holds unread bytes (/proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    ends = [
        (int(r[1].split(":")[1], 16), int(r[2].split(":")[1], 16), int(r[4].split(":")[1], 16))
        for r in rows
    ]
    unread = {remote for local, remote, queued in ends if local == port and queued}
    port_of = {f"socket:[{r[9]}]": int(r[1].split(":")[1], 16) for r in rows}

    def waits(pid: int) -> bool:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if port_of.get(os.readlink(fd)) in unread:
                    return True
            except FileNotFoundError:  # closed meanwhile
                continue
        return False

    return all(waits(pid) for pid in pids)


def freeze_while_saving(team: Team) -> list[Outcome]:
    """Two runs a home whose jobs wait at the gate; once all run, the store is stopped
    (SIGSTOP), the gate opened, and the store resumed once every run that is still going
    has a request waiting there: each run saves its artifacts into a store that hangs."""
    for mark in team.gate.iterdir():
        mark.unlink()
    started = team.start(team.plan(("hold", "hold")))
    store = team.server.proc.pid

    def going() -> list[int]:
        return [s.proc.pid for s in started if s.proc.poll() is None]

    def all_running() -> bool:  # a run that could not start is judged by its outcome
        return len(list(team.gate.glob("ready.*"))) == len(going())

    try:
        wait_for(all_running, timeout=120, interval=0.1, what="every job running")
        os.kill(store, signal.SIGSTOP)
        try:
            (team.gate / "go").touch()
            wait_for(
                lambda: waiting_at(team.server.port, going()),
                timeout=60,
                interval=0.1,
                what="every save waiting at the store",
            )
        finally:
            os.kill(store, signal.SIGCONT)
    finally:
        (team.gate / "go").touch()  # whatever happened, every job can end
    return team.finish(started)


def clear_reason(o: Outcome) -> bool:
    """A failed run says why in one of dstack's paragraphs, never with a traceback."""
    return bool(re.search(r"^dstack: ", o.err, re.M)) and "Traceback" not in o.err


def test_runs_saving_while_the_store_is_frozen_succeed_or_say_why(team: Team) -> None:
    team.new_content()
    team.cold(venvs=False)
    outcomes = freeze_while_saving(team)
    blamed = [o for o in outcomes if o.code != 0 and clear_reason(o) and team.bucket in o.err]
    assert [o.describe() for o in outcomes if o.code != 0 and o not in blamed] == []
    assert len(blamed) < len(outcomes), "a pause of a second or two is ridden out"
    assert team.problems(outcomes) == []
    assert_clean(team)
