"""The bytes of one upload: a file or a span of it, read as a stream an SDK may seek in, and
for a content-addressed blob hashed as it is read, so that bytes which changed since the file
was hashed are never committed under its name."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dstack.errors import ContentMismatch

Progress = Callable[[int], None]  # called with a number of bytes just moved
Span = tuple[int, int]  # (offset, length): a part of a file stored as its own object


class Window(io.RawIOBase):
    """A readable stream of ``size`` bytes that seeks within them (SDKs ask its length, seek
    back to retry, and read it as a file)."""

    size: int
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = min(max(base + pos, 0), self.size)
        return self._pos


class VerifiedReader(Window):
    """A file (or span) read for an upload, hashed as it is read: the read that completes it
    raises ContentMismatch when the bytes do not hash to ``sha256``, so an SDK that reads
    before it sends never commits them. A seek back to the start hashes again."""

    def __init__(
        self, source: io.RawIOBase | io.BufferedIOBase, size: int, sha256: str, label: str
    ) -> None:
        self._source, self.size, self.sha256, self.label = source, size, sha256, label
        self._digest = hashlib.sha256()
        self._pos = self._hashed = 0

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if super().seek(pos, whence) == 0:
            self._digest, self._hashed = hashlib.sha256(), 0
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos > self._hashed:  # skipped ahead: hash what was skipped
            at = self._pos
            self._pos = self._hashed
            while self._pos < at:
                self.readinto(bytearray(min(at - self._pos, 1 << 20)))
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            self._verify()  # an empty file has no last read to check it on
            return 0
        self._source.seek(self._pos)
        view = memoryview(buffer)[:want]
        got = self._source.readinto(view) or 0
        if got == 0:
            raise ContentMismatch(f"'{self.label}' shrank while it was being stored.")
        if self._pos == self._hashed:
            self._digest.update(view[:got])
            self._hashed += got
            self._verify()
        self._pos += got
        return got

    def _verify(self) -> None:
        if self._hashed == self.size and self._digest.hexdigest() != self.sha256:
            raise ContentMismatch(f"'{self.label}' changed while it was being stored.")


class FileSpan(Window):
    """A read-only window (offset, size) of a file: an SDK uploads it as if it were a whole
    file, read from disk as it is sent (memory stays flat)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.offset, self.size, self._pos = offset, size, 0

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self.offset + self._pos)
        got = self._file.readinto(memoryview(buffer)[:want])
        self._pos += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def open_span(path: Path, span: Span | None) -> io.RawIOBase | io.BufferedReader:
    """The whole file, or the window ``span`` of it, open for reading."""
    if span is None:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    return FileSpan(path, *span)


@dataclass(frozen=True)
class Upload:
    """One put_file call as a store carries it out: the file (or the ``span`` of it), its
    size, and for a content-addressed blob the ``sha256`` it must hash to."""

    src: Path
    span: Span | None
    size: int
    sha256: str | None
    progress: Progress | None

    @classmethod
    def of(
        cls, src: Path, span: Span | None, sha256: str | None, progress: Progress | None
    ) -> Upload:
        return cls(src, span, span[1] if span else src.stat().st_size, sha256, progress)

    def open(self) -> io.RawIOBase | io.BufferedReader:
        """The bytes as they are on disk (a store that has the server check the hash)."""
        return open_span(self.src, self.span)

    @contextlib.contextmanager
    def verified(self) -> Iterator[io.RawIOBase | io.BufferedReader]:
        """The bytes, open; a blob's are hashed as they are read (VerifiedReader), so the read
        that completes them fails when the file changed since it was hashed."""
        with self.open() as body:
            if self.sha256 is None:
                yield body
            else:
                yield VerifiedReader(body, self.size, self.sha256, str(self.src))
