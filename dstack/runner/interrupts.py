"""How a supervisor takes SIGTERM and Ctrl-C: noted, for its loop to act on at its next turn.

An exception raised wherever the main thread happens to be is not safe: inside paramiko,
between taking a lock and the `try` that gives it back, it leaves the lock held and the next
SSH call waits on it for ever; between starting a job and recording it, the job is left
running unseen. So a signal is only noted (a second Ctrl-C asks for an abort); Ctrl-C raises
KeyboardInterrupt only inside the waits built to take it (a job's grace period after TERM,
a host's teardown), which the supervisor runs through ``taking_ctrl_c``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupts:
    def __init__(self) -> None:
        self.requested: str | None = None  # "stop", then "abort" after a second Ctrl-C
        self._taking = False  # inside a wait that takes KeyboardInterrupt
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        """Handle SIGTERM, and Ctrl-C unless this process ignores it (a shell's background
        job does), until the block ends."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def taking_ctrl_c(self, action: Callable[[], T]) -> T:
        """``action()``, a wait that takes Ctrl-C (KeyboardInterrupt) itself."""
        outer = self._taking
        try:
            self._taking = True
            return action()
        finally:
            self._taking = outer

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        ctrl_c = signum == signal.SIGINT
        if ctrl_c and self._taking:
            if self.requested is not None:  # pressed again while stopping: kill at once
                self.requested = "abort"
            raise KeyboardInterrupt
        if self.requested is None:
            self.requested = "stop"
        elif ctrl_c:
            self.requested = "abort"
