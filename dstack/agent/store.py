"""A write-only object store for the agent: every object goes up under one of the run's
upload grants (dstack.agent.grants), by the writer of the grant's kind.

It cannot read, list or delete, so blobs are never skipped by asking: the agent remembers the
blobs it sent (KnownBlobs), and sending one again is harmless (same key, same bytes).
"""

from __future__ import annotations

from collections.abc import Iterator

from dstack.agent.grants import WRITERS, Grant
from dstack.errors import StoreError
from dstack.storage.objects import ObjectStore, check_key
from dstack.storage.upload import Upload


class GrantedStore(ObjectStore):
    remote = True
    parallelism = 4  # each upload holds its bytes in memory (at most one 32 MB chunk)

    def __init__(self, grants: list[Grant], url: str) -> None:
        self.grants = sorted(grants, key=lambda g: len(g.scope), reverse=True)
        self.url = url

    def _grant(self, key: str) -> Grant:
        check_key(key)
        for grant in self.grants:
            if key.startswith(grant.scope):
                return grant
        raise StoreError(f"The agent holds no grant to write '{key}' to {self.url}.")

    def _put_file(self, key: str, upload: Upload) -> None:
        with upload.verified() as body:  # a blob's bytes are checked against its name
            data = body.read(upload.size) if upload.size else b""
            if upload.sha256 is not None:
                body.read(1)  # reading to the end completes the check
        self.put_bytes(key, data or b"")

    def put_bytes(self, key: str, data: bytes) -> None:
        grant = self._grant(key)
        WRITERS[grant.kind](grant, f"{grant.root}{key}", data)

    # what a write-only store cannot do ---------------------------------------------------

    def exists(self, key: str) -> bool:
        return False  # unknown: sending it again is harmless

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        return []

    def open_read(self, key: str) -> Iterator[bytes]:
        raise StoreError("The agent's grants allow no reading.")

    def get_bytes(self, key: str) -> bytes:
        raise StoreError("The agent's grants allow no reading.")

    def delete(self, key: str) -> None:
        raise StoreError("The agent's grants allow no deleting.")

    def ensure_bucket(self) -> list[str]:
        return []

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        raise StoreError("The agent's grants allow no reading.")

    def _write_if(self, key: str, data: bytes, version: str | None) -> bool:
        raise StoreError("The agent's grants allow no conditional writes.")
