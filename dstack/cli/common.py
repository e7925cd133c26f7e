"""Helpers shared by the commands: opening home and state, JSON output, ages and durations."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from typing import Any

from dstack.home import Home, open_home
from dstack.state.db import State

log = logging.getLogger(__name__)


def open_state() -> tuple[Home, State]:
    home = open_home()
    log.debug("DSTACK_HOME %s, state database %s", home.root, home.db_path)
    return home, State(home)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def age(when: float | None) -> str:
    if when is None:
        return "-"
    seconds = max(0, time.time() - when)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = int((end or time.time()) - start)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def table(columns: list[str], rows: list[list[str]], shrink: tuple[str, ...] = ()) -> None:
    """A plain table within the terminal's width (80 when piped). Columns named in ``shrink``
    are shortened with an ellipsis when space runs out; the others are never cut."""
    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    excess = sum(widths) + 2 * (len(columns) - 1) - width
    for index in sorted(
        (i for i, c in enumerate(columns) if c in shrink), key=lambda i: -widths[i]
    ):
        if excess <= 0:
            break
        cut = min(excess, widths[index] - len(columns[index]))
        widths[index] -= cut
        excess -= cut

    def cell(text: str, size: int) -> str:
        return text.ljust(size) if len(text) <= size else text[: size - 1] + "…"

    for row in [columns, *rows]:
        sys.stdout.write(
            "  ".join(cell(t, w) for t, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
