"""Progress bars for uploads and downloads (rich, on stderr, only for transfers worth watching)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MIN_BYTES = 8 * 1024**2


class TransferBar:
    """A byte meter: ``expect(more)`` grows the total and shows the bar once it is worth it;
    calls advance it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.total = self.moved = 0
        self.progress: Any = None
        self.task: Any = None

    def expect(self, more: int) -> None:
        self.total += more
        if self.progress is not None:
            self.progress.update(self.task, total=self.total)
            return
        if self.total < MIN_BYTES or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
        self.progress = Progress(*columns, transient=True, console=Console(stderr=True))
        self.task = self.progress.add_task(self.label, total=self.total, completed=self.moved)
        self.progress.start()

    def __call__(self, moved: int) -> None:
        self.moved += moved
        if self.progress is not None:
            self.progress.advance(self.task, moved)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def transfer_bar(label: str) -> Iterator[TransferBar]:
    bar = TransferBar(label)
    try:
        yield bar
    finally:
        bar.close()
