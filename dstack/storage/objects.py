"""The small object-store interface every backend (local folder, S3, GCS, Azure) implements."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dstack.atomic import write_bytes_atomic
from dstack.errors import StoreError

Progress = Callable[[int], None]  # called with a number of bytes just moved
Span = tuple[int, int]  # (offset, length): a part of a file stored as its own object


class Meter(Protocol):
    """A progress display: told the total once known, then each number of bytes moved."""

    def __call__(self, moved: int) -> None: ...

    def expect(self, more: int) -> None:
        """Add bytes to the total expected (called again as more work is found)."""


class ObjectStore(ABC):
    """Bytes under string keys ('a/b/c'); writes are atomic: a reader sees all or nothing.

    ``remote`` stores answer over the network: callers batch their questions (one listing
    instead of many existence checks) and move files with ``parallelism`` threads."""

    url: str = ""
    remote: bool = False
    parallelism: int = min(8, os.cpu_count() or 1)

    @abstractmethod
    def put_file(
        self,
        key: str,
        src: Path,
        progress: Progress | None = None,
        span: Span | None = None,
        sha256: str | None = None,
    ) -> None:
        """Store the file's bytes, or the ``span`` of them; large files may go in parts (a
        reader still sees all or none). ``sha256`` is the bytes' expected hash: a store that
        checks it on receipt (S3) refuses other bytes with ContentMismatch."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def link_file(self, key: str, src: Path) -> None:
        """Like put_file, but a store on the same disk may hard-link instead of copying."""
        self.put_file(key, src)

    @abstractmethod
    def open_read(self, key: str) -> Iterator[bytes]:
        """Yield the object's bytes in chunks; StoreError when it does not exist."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        """Keys under ``prefix`` in ascending order; at most ``limit`` when given."""

    @abstractmethod
    def ensure_bucket(self) -> list[str]:
        """Create the bucket (versioned) or folder when missing; returns what was done."""


class LocalObjectStore(ObjectStore):
    """A folder; atomic writes by temp file + rename in the same folder."""

    CHUNK = 1 << 20

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.absolute().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def ensure_bucket(self) -> list[str]:
        if self.root.is_dir():
            return []
        try:
            self.root.mkdir(parents=True)
        except OSError as e:
            raise StoreError(f"Cannot create the store folder {self.root}: {e.strerror}.") from e
        return [f"created folder {self.root}"]

    def _atomic_target(self, key: str) -> tuple[Path, int, str]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        return path, fd, tmp

    def put_file(
        self,
        key: str,
        src: Path,
        progress: Progress | None = None,
        span: Span | None = None,
        sha256: str | None = None,
    ) -> None:
        path, fd, tmp = self._atomic_target(key)
        try:
            with os.fdopen(fd, "wb") as out, open_span(src, span) as inp:
                shutil.copyfileobj(inp, out, self.CHUNK)
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if progress:
            progress(path.stat().st_size)

    def link_file(self, key: str, src: Path) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, path)
            os.chmod(path, 0o444)
        except FileExistsError:
            pass
        except OSError:  # another file system, or links not allowed: copy
            self.put_file(key, src)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self._path(key), data)

    def open_read(self, key: str) -> Iterator[bytes]:
        try:
            with open(self._path(key), "rb") as handle:
                while chunk := handle.read(self.CHUNK):
                    yield chunk
        except FileNotFoundError as e:
            raise StoreError(f"Object '{key}' is missing from the store {self.root}.") from e

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise StoreError(f"Object '{key}' is missing from the store {self.root}.") from e

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys = sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")  # temp files of writes under way
        )
        return keys[:limit] if limit is not None else keys


class BucketObjectStore(ObjectStore):
    """What the cloud adapters share: a bucket, a key prefix inside it, and network manners."""

    remote = True
    parallelism = 16

    def __init__(self, scheme: str, bucket: str, prefix: str) -> None:
        self.bucket_name, self.prefix = bucket, prefix.strip("/")
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        return f"'{key}' in {self.url}" if key else self.url


class FileSpan(io.RawIOBase):
    """A read-only window (offset, length) of a file, seekable within itself: an SDK uploads it
    as if it were a whole file, read from disk as it is sent (memory stays flat)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.offset, self.length, self._pos = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.length

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        self._pos = min(max(base + pos, 0), self.length)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.length - self._pos)
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
