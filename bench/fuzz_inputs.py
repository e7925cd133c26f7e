"""Fuzzing at full count: the properties of tests/test_fuzz.py (workflow loader, variables,
manifest parser), FULL_COUNT generated inputs per target (12,000 in all), counting every input
that ends in anything but success or a DstackError instead of stopping at the first.

Prints inputs, seconds and failures per target, then each distinct failure (its exception, the
place in dstack that raised it, how often, and the shortest input that caused it). Exits 1 when
there was any failure. Run: `.venv/bin/python bench/fuzz_inputs.py [--examples N] [--seed S]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _timing import print_table  # noqa: E402
from test_fuzz import FULL_COUNT, SETTINGS, TARGETS, Target, ends_well  # noqa: E402

SHOWN = 400  # characters of an input printed


@dataclass
class Failure:
    """One distinct failure: the same exception type raised at the same place."""

    count: int = 0
    example: str = ""  # the shortest input that caused it
    last_line: str = ""  # its traceback's last line


@dataclass
class Tally:
    inputs: int = 0
    seconds: float = 0.0
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(f.count for f in self.failures.values())


def where(error: BaseException) -> str:
    """The innermost frame in dstack's own code (else the innermost one), as file:line."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/dstack/" in f.filename and "/site-packages/" not in f.filename]
    frame = (ours or frames)[-1]
    return f"{frame.filename.split('/main/')[-1]}:{frame.lineno}"


def fuzz(target: Target, examples: int, chosen_seed: int) -> Tally:
    tally = Tally()

    @seed(chosen_seed)
    @settings(max_examples=examples, phases=[Phase.generate], **SETTINGS)
    @given(target.inputs)
    def one(value: object) -> None:
        tally.inputs += 1
        try:
            ends_well(target, value)
        except Exception as error:  # noqa: BLE001 - every other exception is what we count
            kind = f"{type(error).__module__}.{type(error).__qualname__}"
            failure = tally.failures.setdefault((kind, where(error)), Failure())
            failure.count += 1
            shown = repr(value)
            if not failure.example or len(shown) < len(failure.example):
                failure.example = shown
                failure.last_line = traceback.format_exception_only(error)[-1].strip()

    start = time.perf_counter()
    one()
    tally.seconds = time.perf_counter() - start
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=FULL_COUNT, help="inputs per target")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    args = parser.parse_args()
    tallies = {name: fuzz(target, args.examples, args.seed) for name, target in TARGETS.items()}
    rows = [
        [name, str(t.inputs), f"{t.seconds:.1f}", f"{t.inputs / t.seconds:.0f}", str(t.failed)]
        for name, t in tallies.items()
    ]
    total = sum(t.inputs for t in tallies.values())
    failed = sum(t.failed for t in tallies.values())
    rows.append(
        ["all", str(total), f"{sum(t.seconds for t in tallies.values()):.1f}", "", str(failed)]
    )
    print_table(
        f"Fuzzing, seed {args.seed}: each input must end in success or a DstackError",
        ["target", "inputs", "seconds", "inputs/s", "failures"],
        rows,
    )
    distinct = [(name, key, f) for name, t in tallies.items() for key, f in t.failures.items()]
    for name, (_, place), failure in distinct:
        print(f"[{name}] {failure.last_line[:300]}")
        print(f"  raised at {place}, by {failure.count} inputs; the shortest:")
        print(f"  {failure.example[:SHOWN]}\n")
    print(f"{len(distinct)} distinct failures in {failed} of {total} inputs.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
