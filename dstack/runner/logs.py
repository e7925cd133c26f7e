"""Timestamped job logs: each stored line is '<epoch seconds> <text>'."""

from __future__ import annotations

from collections.abc import Iterator


class LogReader:
    """Turns appended log bytes into (timestamp, text) lines, holding back a partial last line."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self._rest = b""

    def feed(self, data: bytes) -> Iterator[tuple[str, str]]:
        self.offset += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for raw in lines:
            yield _parse(raw)

    def close(self) -> Iterator[tuple[str, str]]:
        """The last line when the log ended without a newline."""
        if self._rest:
            yield _parse(self._rest)
            self._rest = b""


def _parse(raw: bytes) -> tuple[str, str]:
    stamp, _, text = raw.decode("utf-8", "replace").partition(" ")
    return stamp, text


def format_line(stamp: str, text: str, prefix: str, timestamps: bool) -> str:
    if timestamps:
        import datetime as dt

        try:
            when = dt.datetime.fromtimestamp(float(stamp)).isoformat(timespec="milliseconds")
        except ValueError:
            when = stamp
        return f"{when} {prefix}{text}\n"
    return f"{prefix}{text}\n"
