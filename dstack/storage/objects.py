"""The small object-store interface every backend (local folder, S3, GCS, Azure) implements."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dstack.atomic import write_bytes_atomic
from dstack.errors import ContentMismatch, StoreError
from dstack.spec.names import shown
from dstack.storage.lock import locked
from dstack.storage.upload import Progress, Span, Upload

if TYPE_CHECKING:
    from dstack.agent.grants import Grant


class Meter(Protocol):
    """A progress display: told the total once known, then each number of bytes moved."""

    def __call__(self, moved: int) -> None: ...

    def expect(self, more: int) -> None:
        """Add bytes to the total expected (called again as more work is found)."""


def check_key(key: str) -> str:
    """``key`` when it stays inside the store: keys are built from names that may come from
    the store itself (runs, jobs, tags), so none may climb out of its folder or prefix."""
    parts = key.rstrip("/").split("/") if key else []
    if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise StoreError(
            f"The store key {shown(key)} is unsafe (absolute or with '..').",
            hint="a name read from the store was tampered with; nothing was read or written",
        )
    return key


class ObjectStore(ABC):
    """Bytes under string keys ('a/b/c'); writes are atomic: a reader sees all or nothing.

    ``remote`` stores answer over the network: callers batch their questions (one listing
    instead of many existence checks) and move files with ``parallelism`` threads."""

    url: str = ""
    remote: bool = False
    parallelism: int = min(8, os.cpu_count() or 1)

    def put_file(
        self,
        key: str,
        src: Path,
        progress: Progress | None = None,
        span: Span | None = None,
        sha256: str | None = None,
    ) -> None:
        """Store the file's bytes, or the ``span`` of them; large files may go in parts (a
        reader still sees all or none). With ``sha256`` (a content-addressed blob) the object
        is written once: it is committed only when the bytes sent hash to ``sha256``
        (ContentMismatch otherwise: the file changed meanwhile), and an object already under
        the key is left as it is, never replaced or deleted. (Only a file dstack itself
        downloaded and verified, over 32 MB, may go to S3 in parts without these checks.)"""
        self._put_file(key, Upload.of(src, span, sha256, progress))

    @abstractmethod
    def _put_file(self, key: str, upload: Upload) -> None:
        """put_file, with the file's size known."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def link_file(self, key: str, src: Path, sha256: str, signature: tuple[int, int]) -> None:
        """Like put_file with ``sha256``, but a store on the same disk may hard-link the file
        instead of copying it, when it still has the (size, mtime) ``signature`` it was hashed
        with (ContentMismatch otherwise)."""
        self.put_file(key, src, sha256=sha256)

    def quarantine(self, key: str) -> str | None:
        """Move an object that failed verification out of the way, so that storing it again
        heals the store; where it went, or None where that is not done (a shared bucket: an
        object others may be reading is never deleted on one reader's word)."""
        return None

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

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and its version (what put_if compares); None when absent."""

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write ``data`` only while the object is at ``version`` (as read_versioned said), or,
        with None, only while there is none: atomic against all writers using put_if. False
        when another write came first. A refused write finding its very bytes there was this
        one, sent twice by an SDK that lost the first answer (dstack's records carry a time)."""
        if self._write_if(key, data, version):
            return True
        found = self.read_versioned(key)
        return found is not None and found[0] == data

    @abstractmethod
    def _write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """put_if, as the store itself does it: False when it refused the write."""

    def upload_grants(self, scopes: list[str], seconds: int) -> list[Grant] | None:
        """Rights a host may use to upload under each key prefix in ``scopes`` for ``seconds``
        and nothing else (dstack.agent); None where this store cannot scope them."""
        return None

    def download_url(self, key: str, seconds: int) -> str | None:
        """A URL that lets its holder read this one object for ``seconds`` (a host's agent
        polls one for a stop request); None where this store cannot sign one."""
        return None


class LocalObjectStore(ObjectStore):
    """A folder; atomic writes by temp file + rename in the same folder."""

    CHUNK = 1 << 20

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.absolute().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

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

    def _put_file(self, key: str, upload: Upload) -> None:
        path, fd, tmp = self._atomic_target(key)
        try:
            with os.fdopen(fd, "wb") as out, upload.verified() as source:
                shutil.copyfileobj(source, out, self.CHUNK)
            os.chmod(tmp, 0o444)
            if upload.sha256:
                _commit_once(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if upload.progress:
            upload.progress(path.stat().st_size)

    def link_file(self, key: str, src: Path, sha256: str, signature: tuple[int, int]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not allowed: copy
            return self.put_file(key, src, sha256=sha256)
        try:
            st = os.stat(tmp)
            if (st.st_size, st.st_mtime_ns) != signature:
                raise ContentMismatch(f"'{src}' changed while it was being stored.")
            os.chmod(tmp, 0o444)
            _commit_once(str(tmp), path)
        finally:
            tmp.unlink(missing_ok=True)

    def quarantine(self, key: str) -> str | None:
        path = self._path(key)
        aside = self.root / "quarantine" / f"{key.replace('/', '-')}-{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        return str(aside)

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

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The version is the content's sha256 (as S3's ETag is a small object's MD5)."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Create: hard-link a finished temp file. Update: compare, replace, under a lock."""
        path, fd, tmp = self._atomic_target(key)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            if version is None:
                return _commit_once(tmp, path)
            with locked(self.root / ".lock"):  # a dot: never listed
                found = self.read_versioned(key)
                if found is None or found[1] != version:
                    return False
                os.replace(tmp, path)
                return True
        finally:
            Path(tmp).unlink(missing_ok=True)

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


def _commit_once(tmp: str, path: Path) -> bool:
    """Give the finished temp file its name unless the name is taken (a blob is written once:
    the one already there is never replaced); whether it got it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    return True
