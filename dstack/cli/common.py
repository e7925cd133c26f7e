"""Helpers shared by the commands: opening home and state, JSON output, ages and durations."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

from dstack.home import Home, open_home
from dstack.state.db import State

if TYPE_CHECKING:
    from dstack.service.session import Session

log = logging.getLogger(__name__)
GAP = 2  # spaces between columns


def open_state() -> tuple[Home, State]:
    home = open_home()
    log.debug("DSTACK_HOME %s, state database %s", home.root, home.db_path)
    return home, State(home)


def open_session() -> Session:
    """The service layer's session over this home (see dstack.service)."""
    from dstack.service.session import Session

    return Session(*open_state())


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
    """A rich table within the terminal's width (80 when piped), one line per row. Columns
    named in ``shrink`` are shortened with an ellipsis when space runs out, the widest first;
    the others (run names, statuses) are never cut."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
    widths = [max([cell_len(c), *(cell_len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    excess = sum(widths) + GAP * (len(columns) - 1) - width
    for index in sorted(
        (i for i, c in enumerate(columns) if c in shrink), key=lambda i: -widths[i]
    ):
        if excess <= 0:
            break
        cut = min(excess, widths[index] - cell_len(columns[index]))
        widths[index] -= cut
        excess -= cut
    grid = Table(box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold")
    for name, size in zip(columns, widths, strict=True):
        grid.add_column(name, width=size, no_wrap=True, overflow="ellipsis")
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))  # never read as markup
    # a table that cannot fit is printed whole rather than cut where names would be lost
    needed = sum(widths) + GAP * (len(columns) - 1)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=max(width, needed),
        force_terminal=sys.stdout.isatty(),
        highlight=False,
        emoji=False,
    )
    console.print(grid)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
