"""Content-addressed blobs: sha256 keys, fan-out folders, written once, verified on every read."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from dstack.errors import StoreError
from dstack.storage.objects import ObjectStore

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def blob_key(sha: str) -> str:
    return f"blobs/{sha[:2]}/{sha[2:]}"


class BlobStore:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._known: set[str] = set()

    def put(self, path: Path, sha: str | None = None, link: bool = False) -> str:
        """Store the file's bytes unless a blob with that hash exists; returns the hash."""
        sha = sha or file_sha256(path)
        if sha not in self._known:
            if not self.objects.exists(blob_key(sha)):
                if link:
                    self.objects.link_file(blob_key(sha), path)
                else:
                    self.objects.put_file(blob_key(sha), path)
            self._known.add(sha)
        return sha

    def has(self, sha: str) -> bool:
        return sha in self._known or self.objects.exists(blob_key(sha))

    def get(self, sha: str, dest: Path, label: str) -> None:
        """Write the blob to ``dest`` atomically, refusing bytes whose hash is not ``sha``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dstack-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.objects.open_read(blob_key(sha)):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise StoreError(
                    f"'{label}' is corrupted in the store: its content hashes to "
                    f"{digest.hexdigest()[:12]}…, not {sha[:12]}….",
                    hint="the stored copy was damaged; re-run the job that produced it",
                )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
