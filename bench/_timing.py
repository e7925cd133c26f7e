"""Shared helpers for the benchmarks: repeated subprocess timings and plain-text tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DSTACK = Path(sys.executable).parent / "dstack"


class CommandFailed(RuntimeError):
    """A timed command exited non-zero; the message carries its exit code and output."""


@dataclass(frozen=True)
class Timing:
    """Wall times in seconds of repeated runs of one command."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)


def env_with(**overrides: str) -> dict[str, str]:
    """A copy of this process's environment with ``overrides`` applied."""
    return {**os.environ, **overrides}


def run_checked(
    cmd: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run ``cmd`` once, capturing its output; raise CommandFailed on a non-zero exit."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def time_command(
    cmd: Sequence[str | Path],
    runs: int = 7,
    warmup: int = 1,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Timing:
    """Wall time of ``cmd`` over ``runs`` runs, after ``warmup`` untimed ones (output captured)."""
    for _ in range(warmup):
        run_checked(cmd, cwd, env)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run_checked(cmd, cwd, env)
        samples.append(time.perf_counter() - start)
    return Timing(samples)


def seconds(value: float) -> str:
    """Format a duration in seconds with millisecond resolution."""
    return f"{value:.3f}"


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> None:
    """Print a title and a table: the first ``text_columns`` left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print()
