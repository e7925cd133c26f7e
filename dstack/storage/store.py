"""The store facade the rest of dstack uses: blobs, manifests and shared run records over one
ObjectStore.

Layout (the same in a folder and in a bucket):
  blobs/ab/cdef…           file contents by sha256, written once
  snapshots/DIGEST.json    code snapshots (manifests)
  manifests/RUN/JOB.json   a job's artifacts; written last, in one put, so never half-visible
  runs/RUN.json            what a teammate needs to list a run and fetch its artifacts; created
                           only where no record is (the run's name is claimed by creating it),
                           then changed only by compare-and-swap (ObjectStore.put_if)
  tags/TAG/N.json          a tag's history, one immutable event per change, each created only
                           under the next free number (dstack.tags); older events are named
                           TIME-ID.json and sort before the numbers that continue them
  .lock                    in a folder store only: the lock of its compare-and-swap updates
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dstack.home import Home
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Manifest
from dstack.storage.objects import LocalObjectStore, ObjectStore


def artifact_key(run: str, workflow: str) -> str:
    return f"manifests/{run}/{workflow}.json"


def snapshot_key(digest: str) -> str:
    return f"snapshots/{digest}.json"


def run_key(run: str) -> str:
    return f"runs/{run}.json"


class Store:
    def __init__(self, objects: ObjectStore, home: Home | None = None, direct: bool = True) -> None:
        """``direct``: whether hosts may write their jobs' data here themselves (dstack.agent)."""
        self.objects, self.home, self.direct = objects, home, direct
        self.shared = home is None or objects.url != home.store_dir.absolute().as_uri()
        if objects.remote and home is not None:
            known = home.root / "cache" / "known-blobs" / _digest(objects.url)
            cache = LocalObjectStore(home.root / "cache" / "blobs")
            self.blobs = BlobStore(objects, known, cache)
        else:
            self.blobs = BlobStore(objects)

    @classmethod
    def open(cls, home: Home) -> Store:
        from dstack.config import store_location
        from dstack.storage.location import open_objects

        location = store_location(home)
        objects = open_objects(location, home.store_dir, home.sdk_cache)
        return cls(objects, home, location is None or location.direct)

    @property
    def url(self) -> str:
        return self.objects.url

    # manifests -----------------------------------------------------------------------

    def put_manifest(self, key: str, manifest: Manifest) -> None:
        self.objects.put_bytes(key, manifest.to_json())

    def get_manifest(self, key: str) -> Manifest:
        return Manifest.from_json(self.objects.get_bytes(key), f"Manifest '{key}'")

    def delete_manifest(self, key: str) -> None:
        self.objects.delete(key)

    # shared run records --------------------------------------------------------------

    def read_run(self, name: str) -> tuple[bytes, str] | None:
        """The run's record as stored (unchecked) and its version; None when there is none."""
        return self.objects.read_versioned(run_key(name))

    def put_run(self, record: dict[str, Any], version: str | None) -> bool:
        """Write the record only over ``version`` (None: only where none is); False when
        another write came first (dstack.sharing.publish_run reads again and decides)."""
        data = json.dumps(record).encode()
        return self.objects.put_if(run_key(record["name"]), data, version)

    def run_names(self) -> list[str]:
        return [k[5:-5] for k in self.objects.keys("runs/") if k.endswith(".json")]

    def delete_run(self, name: str) -> None:
        self.objects.delete(run_key(name))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
