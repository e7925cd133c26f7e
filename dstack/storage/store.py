"""The store facade the rest of dstack uses: blobs plus named manifests over one ObjectStore."""

from __future__ import annotations

from dstack.errors import StoreError
from dstack.home import Home
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Manifest
from dstack.storage.objects import LocalObjectStore, ObjectStore


def artifact_key(run: str, workflow: str) -> str:
    return f"manifests/{run}/{workflow}.json"


def snapshot_key(digest: str) -> str:
    return f"snapshots/{digest}.json"


class Store:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.blobs = BlobStore(objects)

    @classmethod
    def open(cls, home: Home) -> Store:
        return cls(LocalObjectStore(home.store_dir))

    def put_manifest(self, key: str, manifest: Manifest) -> None:
        self.objects.put_bytes(key, manifest.to_json())

    def get_manifest(self, key: str) -> Manifest:
        try:
            return Manifest.from_json(self.objects.get_bytes(key))
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"Manifest '{key}' in the store is unreadable: {e}.") from e

    def delete_manifest(self, key: str) -> None:
        self.objects.delete(key)
