"""Processes of this machine, named so that a reused pid is not taken for them (on Linux from
/proc, elsewhere through psutil).

A process is its pid plus its start time in clock ticks since boot, the unit of Linux's
/proc/PID/stat: what earlier versions recorded, and what hosts' scripts still read there.
Elsewhere the ticks come from psutil's start and boot times, which the clock's adjustments
may move by a little; so a start time matches within a second, far less than the time a pid
takes to come round again.
"""

from __future__ import annotations

import contextlib
import os
import signal

# Linux: /proc read directly, which is what psutil reads there, without its 10 ms import on
# every run; elsewhere (macOS) psutil.
LINUX = os.path.isdir("/proc/self")


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> int | None:
    """Clock ticks since boot at which ``pid`` started; None when there is no such process."""
    if LINUX:
        stat = _proc_stat(pid)
        return int(stat[19]) if stat else None
    import psutil

    try:
        created: float = psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):  # ValueError: not a pid at all (negative)
        return None
    booted: float = psutil.boot_time()
    return round((created - booted) * _ticks_per_second())


def alive(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` runs, is not a zombie, and is the same process that started at ``started``."""
    if not pid:
        return False
    if LINUX:
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # a zombie, or dead
            return False
        return started is None or int(stat[19]) == started
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
    except (psutil.Error, ValueError):
        return False
    if started is None:
        return True
    now = start_time(pid)
    return now is not None and abs(now - started) <= _ticks_per_second()


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None: no process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
