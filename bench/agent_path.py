"""The host agent's direct path to the bucket, next to the path through the laptop (issue 14).

A pool host (sshd in a network namespace: root and Debian's openssh-server, like the tests)
whose jobs reach SeaweedFS on the namespace's outside veth address, as a cloud VM reaches its
region's bucket. Measured:

1. A job writes SIZE MB of random artifacts (4 files) and ends: seconds from its last write to
   `dstack run` returning, and the run's wall time, with the files saved by the host's agent
   (`store: {direct: true}`, the default) and through the laptop (`direct: false`); next to
   `aws s3 cp --recursive` of as many bytes run on the host (the floor). Then again with the
   SSH traffic shaped to a home-like RATE (tc, TCP port 22 only; the bucket's stays unshaped).
2. How soon a line the job prints is readable in the bucket (the agent sends the log every
   2 s): a reader polls the job's log parts every 0.1 s; and through `dstack logs RUN -f` from
   the laptop's home and from a teammate's home sharing the bucket. And how soon a
   `mount: true` file the job writes with each line is listed in the live manifest (the
   target: within 2 s).

Run: `.venv/bin/python bench/agent_path.py [--size-mb 1024] [--runs 1] [--lines 20]
[--rate 100mbit]` (about 5 minutes at 1 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import DSTACK, CommandFailed, env_with, print_table, run_checked, seconds  # noqa: E402
from buckets import SeaweedS3, start_seaweedfs  # noqa: E402
from sshd import Namespace, SSHServer, add_netns, make_server  # noqa: E402

from dstack.agent.keys import log_prefix, status_key  # noqa: E402

NETNS_INDEX = 6  # the tests use 1-5; 6 keeps out of their way when both run at once
FILES = 4
BUCKET = "agent-path-bench"
POLL = 0.1
AGENT, LAPTOP = "the host's agent (direct: true)", "through the laptop (direct: false)"
AWS = shutil.which("aws", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
FLOOR = f"{'aws s3 cp --recursive' if AWS else 'boto3 upload_file'} on the host (floor)"
WORKFLOWS = """
workflows:
  - name: save
    commands:
      - echo "first-write $(date +%s.%N)"
      - mkdir -p out
      - for i in $(seq {files}); do head -c {each}M /dev/urandom > out/f$i.bin; done
      - echo "last-write $(date +%s.%N)"
    artifacts: [out]
  - name: warm
    commands:
      - mkdir -p out && head -c 1M /dev/urandom > out/w.bin
    artifacts: [out]
  - name: lines
    commands:
      - until [ -e {gate} ]; do sleep 0.05; done
      - mkdir -p ckpt
      - >-
        for i in $(seq {lines}); do sleep $((RANDOM % 15 + 1))e-1; t=$(date +%s.%N);
        echo "line $i $t"; echo "$t" > "ckpt/$i-$t"; done
    artifacts: [{{path: ckpt, mount: true}}]
"""
LINE = re.compile(rb"line (\d+) (\d+\.\d+)")
SAVED = re.compile(r"^ckpt/(\d+)-(\d+\.\d+)$")  # a `mount: true` file, named by its writing


class Home:
    """One DSTACK_HOME on the shared repository folder: the laptop, or a teammate."""

    def __init__(self, path: Path, repo: Path, s3: SeaweedS3, prefix: str) -> None:
        self.path, self.repo = path, repo
        self.env = env_with(DSTACK_HOME=str(path), PYTHONUNBUFFERED="1", **s3.env())
        self.prefix, self.url = prefix, f"s3://{BUCKET}/{prefix}"
        self.dstack("init", "--store", self.url, "--endpoint-url", s3.endpoint)

    def dstack(self, *args: str) -> str:
        return run_checked([DSTACK, *args], self.repo, self.env)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        pipe = subprocess.PIPE
        return subprocess.Popen(
            [DSTACK, *args], cwd=self.repo, env=self.env, stdout=pipe, stderr=pipe
        )

    def not_direct(self) -> None:
        """`store: {direct: false}`: everything passes through this machine, as before."""
        import yaml

        config = self.path / "config.yaml"
        data = yaml.safe_load(config.read_text())
        data["store"]["direct"] = False
        config.write_text(yaml.safe_dump(data))

    def last_run(self) -> str:
        return str(json.loads(self.dstack("ps", "--json", "-a"))[0]["name"])

    def stop_all(self) -> None:
        """Whatever this home left running (after an error) is stopped."""
        try:
            runs = json.loads(self.dstack("ps", "--json", "-a"))
        except (CommandFailed, ValueError):
            return
        for run in runs:
            if run["status"] in ("submitted", "waiting", "running"):
                self.popen("stop", run["name"], "-x").communicate()


def stamp(output: str, name: str) -> float:
    found = re.search(rf"{name} (\d+\.\d+)", output)
    if found is None:
        raise RuntimeError(f"the job printed no '{name}' line:\n{output[-2000:]}")
    return float(found.group(1))


def save_run(home: Home, s3: SeaweedS3, direct: bool) -> list[float | None]:
    """Seconds from the job's last write to the run done and to its agent's seal in the
    bucket (None through the laptop), the run's wall time and the job's own time; then how
    often the laptop found the agent gone and started it again, and whether it gave up on
    the agent and saved the files itself."""
    began = time.time()
    run = [str(DSTACK), "run", "save", "--host", "box"]
    done = subprocess.run(run, cwd=home.repo, env=home.env, capture_output=True, text=True)
    ended = time.time()
    if done.returncode != 0:
        raise CommandFailed(f"dstack run save exited {done.returncode}:\n{done.stderr[-3000:]}")
    itself = "itself" in done.stderr  # "box saves save's log and artifacts to URL itself"
    if itself != direct:
        raise RuntimeError(f"expected the {'agent' if direct else 'laptop'} path:\n{done.stderr}")
    last = stamp(done.stdout, "last-write")
    sealed = restarts = fell_back = None
    if direct:
        restarts = float(done.stderr.count("its agent is gone"))
        fell_back = float("saving its files from this machine" in done.stderr)
        key = f"{home.prefix}/{status_key(home.last_run(), 'save')}"  # written as it sealed
        status = json.loads(s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
        sealed = float(status["heartbeat_at"]) - last
    job = last - stamp(done.stdout, "first-write")
    return [ended - last, sealed, ended - began, job, restarts, fell_back]


def floor(space: Namespace, s3: SeaweedS3, folder: Path, name: str) -> float:
    """Seconds for a plain upload of ``folder`` from the host to the bucket."""
    target = f"s3://{BUCKET}/floor/{name}/"
    if AWS:
        cmd = [AWS, "s3", "cp", "--recursive", "--quiet", str(folder), target]
    else:  # boto3's upload_file, the same transfer manager awscli uses
        code = (
            "import boto3,os,sys;c=boto3.client('s3');b,p,d=sys.argv[1:]\n"
            "for f in sorted(os.listdir(d)): c.upload_file(os.path.join(d,f),b,p+f)"
        )
        cmd = [sys.executable, "-c", code, BUCKET, f"floor/{name}/", str(folder)]
    began = time.perf_counter()
    run_checked(["ip", "netns", "exec", space.name, *cmd], env=env_with(**s3.env()))
    return time.perf_counter() - began


def tc_devices(space: Namespace) -> list[tuple[list[str], str, str]]:
    """(command prefix, device, field of the sshd's port): the host's side sends from port 22,
    this machine's side sends to it."""
    return [
        (["ip", "netns", "exec", space.name], f"{space.veth}p", "sport"),
        ([], space.veth, "dport"),
    ]


def shape(space: Namespace, rate: str) -> None:
    """SSH traffic both ways through an HTB class at ``rate``; the rest matches no class and
    goes by unshaped (this kernel has htb, tbf and u32, but no prio or netem)."""
    for prefix, dev, field in tc_devices(space):
        for command in (
            f"qdisc add dev {dev} root handle 1: htb default 99",
            f"class add dev {dev} parent 1: classid 1:20 htb rate {rate} ceil {rate} "
            "burst 64k cburst 64k quantum 1514",
            f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {field} 22 0xffff "
            "flowid 1:20",
        ):
            run_checked([*prefix, "tc", *command.split()])


def unshape(space: Namespace) -> None:
    for prefix, dev, _ in tc_devices(space):
        subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)


def ssh_rate(server: SSHServer, mb: int = 48) -> float:
    """MB/s of a plain `ssh host head -c` from the host to this machine."""
    began = time.perf_counter()
    subprocess.run(
        [*server.ssh_argv(), f"head -c {mb}M /dev/zero"], stdout=subprocess.DEVNULL, check=True
    )
    return mb / (time.perf_counter() - began)


def parse(data: bytes, seen: dict[int, float], at: float) -> None:
    """Note when each complete `line N TIME` was first seen, as delay from its writing."""
    for raw in data.split(b"\n")[:-1]:
        found = LINE.search(raw)
        if found and int(found.group(1)) not in seen:
            seen[int(found.group(1))] = at - float(found.group(2))


def watch_bucket(s3: SeaweedS3, prefix: str, seen: dict[int, float], stop: threading.Event) -> None:
    """Poll the job's log parts every POLL seconds, fetching each new part once."""
    client, parts = s3.client(), {}
    while not stop.is_set():
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        for key in sorted(o["Key"] for o in listed):
            if key not in parts:
                parts[key] = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        parse(b"".join(parts[k] for k in sorted(parts)), seen, time.time())
        stop.wait(POLL)


def watch_manifest(s3: SeaweedS3, key: str, seen: dict[int, float], stop: threading.Event) -> None:
    """Poll the job's live manifest every POLL seconds: when each ckpt file first shows."""
    client = s3.client()
    while not stop.is_set():
        try:
            raw = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raw = b'{"entries": []}'
        now = time.time()
        for entry in json.loads(raw)["entries"]:
            found = SAVED.match(entry["path"])
            if found and int(found.group(1)) not in seen:
                seen[int(found.group(1))] = now - float(found.group(2))
        stop.wait(POLL)


def watch_output(proc: subprocess.Popen[bytes], seen: dict[int, float], err: list[str]) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    for raw in iter(proc.stdout.readline, b""):
        parse(raw if raw.endswith(b"\n") else raw + b"\n", seen, time.time())
    err.append(proc.stderr.read().decode(errors="replace").strip())


def log_delays(
    laptop: Home, mate: Home, s3: SeaweedS3, gate: Path, lines: int
) -> dict[str, tuple[dict[int, float], str]]:
    """Per reader: {line: seconds from written on the host to seen}, and why it saw none."""
    laptop.dstack("run", "lines", "--host", "box", "-d")
    run = laptop.last_run()
    bucket: dict[int, float] = {}
    stop = threading.Event()
    prefix = f"{laptop.prefix}/{log_prefix(run, 'lines')}"
    saved: dict[int, float] = {}
    manifest = f"{laptop.prefix}/manifests/{run}/lines.json"
    threads = [
        threading.Thread(target=watch_bucket, args=(s3, prefix, bucket, stop)),
        threading.Thread(target=watch_manifest, args=(s3, manifest, saved, stop)),
    ]
    followed: dict[str, tuple[subprocess.Popen[bytes], dict[int, float], list[str]]] = {}
    for label, home in (
        ("`dstack logs -f`, the laptop's home", laptop),
        ("`dstack logs -f`, a teammate's home", mate),
    ):
        seen: dict[int, float] = {}
        err: list[str] = []
        proc = home.popen("logs", run, "-f")
        followed[label] = (proc, seen, err)
        threads.append(threading.Thread(target=watch_output, args=(proc, seen, err)))
    for thread in threads:
        thread.start()
    gate.touch()
    deadline = time.monotonic() + lines * 1.5 + 60
    while min(len(bucket), len(saved)) < lines and time.monotonic() < deadline:
        time.sleep(POLL)
    stop.set()
    for proc, _, _ in followed.values():
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    for thread in threads:
        thread.join()
    found = {
        "the bucket's log parts, polled every 0.1 s": (bucket, ""),
        "a `mount: true` file in the bucket's live manifest": (saved, ""),
    }
    for label, (_, seen, err) in followed.items():
        found[label] = (seen, (err[0].splitlines() or [""])[0] if err else "")
    return found


def cell(values: Sequence[float | None], pick: Callable[[list[float]], float]) -> str:
    got = [v for v in values if v is not None]
    return seconds(pick(got)) if got else "-"


def count(values: Sequence[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"{sum(got):.0f}" if got else "-"


def saves(
    args: argparse.Namespace,
    space: Namespace,
    server: SSHServer,
    s3: SeaweedS3,
    folder: Path,
    homes: dict[str, Home],
) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of SSH rates and of save timings, unshaped and then shaped."""
    rates, table = [], []
    for rate in ["", args.rate] if args.rate != "0" else [""]:
        link = f"SSH at {rate}" if rate else "unshaped"
        try:
            if rate:
                shape(space, rate)
        except CommandFailed as e:  # a kernel without htb or u32
            print(f"SSH traffic cannot be shaped here, skipped: {str(e).splitlines()[-1]}")
            break
        try:
            rates.append([link, f"{ssh_rate(server):.1f}"])
            timed: dict[str, list[list[float | None]]] = {name: [] for name in homes}
            for i in range(args.runs):  # the two paths take turns at going first
                for name in list(homes) if i % 2 == 0 else list(homes)[::-1]:
                    timed[name].append(save_run(homes[name], s3, name == AGENT))
            floors = [floor(space, s3, folder, f"{link}-{i}") for i in range(args.runs)]
        finally:
            unshape(space)
        for name, runs in timed.items():
            done, sealed, wall, job, restarts, fell_back = zip(*runs, strict=True)
            median = statistics.median
            table.append([name, link, cell(done, median), cell(done, min)])
            table[-1] += [cell(column, median) for column in (sealed, wall, job)]
            table[-1] += [count(restarts), count(fell_back)]
        table.append([FLOOR, link, cell(floors, statistics.median), cell(floors, min)] + ["-"] * 5)
    return rates, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="artifacts the job writes")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each path")
    parser.add_argument("--lines", type=int, default=20, help="log lines timed")
    parser.add_argument("--rate", default="100mbit", help="shaped SSH rate (tc units); 0: none")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("this bench needs root (network namespaces, users, tc), like the tests")
    each = max(1, args.size_mb // FILES)
    work = Path(tempfile.mkdtemp(prefix="dstack-bench-agent-"))
    space = add_netns(NETNS_INDEX)
    server: SSHServer | None = None
    s3: SeaweedS3 | None = None
    homes: list[Home] = []
    try:
        server = make_server("apbench", "dstackapbench", space.inside, netns=space.name)
        s3 = start_seaweedfs(work / "s3", ip=space.outside)
        s3.client().create_bucket(Bucket=BUCKET)
        repo = work / "repo"
        (repo / ".dstack").mkdir(parents=True)
        gate = server.home / "bench-lines-go"  # the job prints once this exists
        text = WORKFLOWS.format(files=FILES, each=each, gate=gate, lines=args.lines)
        (repo / ".dstack" / "workflows.yaml").write_text(text)
        direct = Home(work / "direct", repo, s3, "direct")
        laptop = Home(work / "laptop", repo, s3, "laptop")
        laptop.not_direct()
        mate = Home(work / "mate", repo, s3, "direct")  # a teammate: the same bucket and prefix
        homes += [direct, laptop, mate]
        for home in (direct, laptop):
            home.dstack(*server.pool_add_args("box"))
            home.dstack("run", "warm", "--host", "box")  # untimed: stages the agent, pins keys
        folder = work / "floor"
        folder.mkdir()
        for i in range(FILES):
            (folder / f"f{i}.bin").write_bytes(os.urandom(each << 20))
        paths = {AGENT: direct, LAPTOP: laptop}
        rates, table = saves(args, space, server, s3, folder, paths)
        delays = log_delays(direct, mate, s3, gate, args.lines)
    finally:
        for home in homes:
            home.stop_all()
        unshape(space)
        if s3 is not None:
            s3.stop()
        if server is not None:
            server.stop()
        space.delete()
        shutil.rmtree(work, ignore_errors=True)
    print_table("SSH throughput host -> laptop (plain ssh, 48 MB)", ["link", "MB/s"], rates)
    print_table(
        f"{FILES * each} MB of artifacts ({FILES} files) written by a job on a host that reaches "
        f"the bucket directly; seconds from the job's last write (median of {args.runs}, min)",
        ["saved by", "laptop<->host", "run done", "min", "sealed", "run wall", "job itself"]
        + ["agent restarts", "fallbacks"],
        table,
        text_columns=2,
    )
    rows, notes = [], []
    for label, (seen, why) in delays.items():
        got = sorted(seen.values())
        median = seconds(statistics.median(got)) if got else "-"
        rows.append([label, median, seconds(got[-1]) if got else "-", f"{len(got)}/{args.lines}"])
        if not got:
            notes.append(f"{label}: {why or 'printed none'}")
    print_table(
        "Delay from a line (or a `mount: true` file) written on the host to it being readable;"
        " seconds",
        ["where", "median", "max", "lines"],
        rows,
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
