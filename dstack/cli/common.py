"""Helpers shared by the commands: opening home and state, JSON output, ages and durations."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from dstack.home import Home, open_home
from dstack.state.db import State


def open_state() -> tuple[Home, State]:
    home = open_home()
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


def table(columns: list[str], rows: list[list[str]]) -> None:
    """A plain table that fits 80 columns (rich, imported only here)."""
    from rich.console import Console
    from rich.table import Table

    view = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*row)
    Console(width=min(Console().width, 100)).print(view)
