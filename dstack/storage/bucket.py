"""What the cloud adapters (S3, GCS, Azure) share: a bucket, a key prefix inside it, network
manners, and the store's verbs written once.

Each verb checks its key, puts the prefix in front of it and turns the SDK's exceptions into
one sentence naming the object (``_errors``); an adapter supplies only the SDK calls, the
``_``-methods, on the full object name."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from itertools import islice

from dstack.storage.objects import ObjectStore, check_key
from dstack.storage.upload import Upload


class BucketObjectStore(ObjectStore):
    """A store in a cloud bucket: answers over the network, moves files with many threads."""

    remote = True
    parallelism = 16

    def __init__(self, scheme: str, bucket: str, prefix: str) -> None:
        self.bucket_name, self.prefix = bucket, prefix.strip("/")
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        return f"'{key}' in {self.url}" if key else self.url

    def _put_file(self, key: str, upload: Upload) -> None:
        with self._errors("upload to", key):
            self._upload(self._key(key), upload)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self._put_bytes(self._key(key), data)

    def open_read(self, key: str) -> Iterator[bytes]:
        with self._errors("read", key):
            yield from self._read(self._key(key))

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            return self._get_bytes(self._key(key))

    def exists(self, key: str) -> bool:
        with self._errors("look up", key):
            return self._exists(self._key(key))

    def delete(self, key: str) -> None:
        """Deleting what is gone is not an error."""
        with self._errors("delete", key):
            self._delete(self._key(key))

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        cut = len(self._key(""))
        with self._errors("list", prefix):
            return [name[cut:] for name in islice(self._names(self._key(prefix), limit), limit)]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        with self._errors("read", key):
            return self._read_versioned(self._key(key))

    def _write_if(self, key: str, data: bytes, version: str | None) -> bool:
        with self._errors("write", key):
            return self._put_if(self._key(key), data, version)

    @abstractmethod
    def _errors(self, action: str, key: str = "") -> AbstractContextManager[None]:
        """SDK exceptions become one clear sentence naming the object and what to do."""

    @abstractmethod
    def _upload(self, name: str, upload: Upload) -> None:
        """Send the file, reporting progress; a blob (``upload.sha256``) is committed only when
        its bytes match, and one already under ``name`` is left as it is."""

    @abstractmethod
    def _put_bytes(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def _read(self, name: str) -> Iterator[bytes]: ...

    @abstractmethod
    def _get_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def _exists(self, name: str) -> bool: ...

    @abstractmethod
    def _delete(self, name: str) -> None:
        """Delete the object; quietly when it is not there."""

    @abstractmethod
    def _read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and the server's version of them (ETag, generation); None when absent."""

    @abstractmethod
    def _put_if(self, name: str, data: bytes, version: str | None) -> bool:
        """The server's own conditional write; False when it refused it (412, 409)."""

    @abstractmethod
    def _names(self, prefix: str, limit: int | None) -> Iterable[str]:
        """Object names under ``prefix`` in ascending order (``limit``: how many are wanted,
        a hint for the listing's page size)."""
