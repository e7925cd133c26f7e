"""CLI start-up: wall time of `dstack --help` next to a bare interpreter and `git --version`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _timing import DSTACK, env_with, print_table, seconds, time_command

RUNS = 10
TARGET = 0.25


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dstack-bench-") as tmp:
        env = env_with(DSTACK_HOME=str(Path(tmp) / "home"))
        commands: list[tuple[str, list[str | Path]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("git --version", ["git", "--version"]),
            ("dstack --help", [DSTACK, "--help"]),
        ]
        timings = {
            label: time_command(cmd, runs=RUNS, cwd=Path(tmp), env=env) for label, cmd in commands
        }
    rows = [[label, seconds(t.median), seconds(t.min)] for label, t in timings.items()]
    print_table(
        f"CLI start-up, wall seconds ({RUNS} runs after 1 warm-up)",
        ["command", "median", "min"],
        rows,
    )
    help_time = timings["dstack --help"].median
    python_time = timings["python -c pass"].median
    verdict = "met" if help_time < TARGET else "missed"
    print(
        f"dstack --help: {seconds(help_time)} s median, target < {TARGET} s: {verdict}; "
        f"{seconds(help_time - python_time)} s above a bare interpreter"
    )


if __name__ == "__main__":
    main()
