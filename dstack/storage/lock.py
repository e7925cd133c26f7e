"""A lock between dstack processes on one machine (or one shared folder), with a deadline.

An exclusive flock on a file: the kernel drops it when its holder dies, so a killed process
never leaves it locked, and one that hangs is waited for only so long. (fcntl, not the
filelock package: importing that would cost every `dstack run` about 10 ms.)
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from dstack.errors import StoreError

WAIT = 10.0  # seconds: the updates it guards take milliseconds


@contextlib.contextmanager
def locked(path: Path, wait: float = WAIT) -> Iterator[None]:
    """Hold the lock on ``path`` (created when missing, never truncated nor removed, so all
    processes lock one inode); a StoreError after ``wait`` seconds of waiting."""
    deadline, pause = time.monotonic() + wait, 0.001
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{path} stayed locked for {wait:.0f} s: another dstack process is "
                        "stuck in the middle of an update.",
                        hint=f"find it with `fuser -v {path}`, stop it, then try again",
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        yield
