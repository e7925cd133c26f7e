"""The object-store contract, the same for a folder, S3 (SeaweedFS), GCS (emulator), Azure (Azurite)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstack.errors import StoreError
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import materialize, scan_files
from dstack.storage.objects import LocalObjectStore, ObjectStore


@pytest.fixture(params=["file", "s3", "gs", "az"])
def objects(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ObjectStore]:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    if request.param == "file":
        store: ObjectStore = LocalObjectStore(tmp_path / "store")
    elif request.param == "s3":
        from dstack.storage.s3 import S3ObjectStore

        server = request.getfixturevalue("s3_server")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        store = S3ObjectStore(bucket, "pre/fix", server.endpoint)
    elif request.param == "gs":
        from dstack.storage.gcs import GCSObjectStore

        server = request.getfixturevalue("gcs_emulator")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        store = GCSObjectStore(bucket, "pre/fix", project="test")
    else:
        from dstack.storage.azure import AzureObjectStore

        server = request.getfixturevalue("azurite")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
        store = AzureObjectStore(bucket, "pre/fix")
    assert store.ensure_bucket(), "a missing bucket is created"
    assert store.ensure_bucket() == [], "an existing one is left as it is"
    yield store


def test_put_get_list_exists_delete(objects: ObjectStore, tmp_path: Path) -> None:
    objects.put_bytes("a/one.json", b'{"x": 1}')
    objects.put_bytes("a/two.json", b"2")
    objects.put_bytes("b/three", b"3")
    assert objects.get_bytes("a/one.json") == b'{"x": 1}'
    assert objects.exists("a/two.json") and not objects.exists("a/nope")
    assert objects.keys("a/") == ["a/one.json", "a/two.json"]
    assert objects.keys("a/", limit=1) == ["a/one.json"]
    assert objects.keys("") == ["a/one.json", "a/two.json", "b/three"]
    objects.delete("a/one.json")
    objects.delete("a/one.json")  # deleting what is gone is not an error
    assert objects.keys("a/") == ["a/two.json"]
    with pytest.raises(StoreError, match="a/one.json"):
        objects.get_bytes("a/one.json")
    with pytest.raises(StoreError, match="a/one.json"):
        list(objects.open_read("a/one.json"))


def test_large_file_goes_up_in_parts_and_streams_back(objects: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as out:
        for _ in range(40):
            out.write(os.urandom(1024**2))
    moved: list[int] = []
    objects.put_file("big", src, moved.append)
    assert sum(moved) == src.stat().st_size
    digest = hashlib.sha256()
    for chunk in objects.open_read("big"):
        assert len(chunk) <= 32 * 1024**2, "read in chunks, never whole"
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_blobs_round_trip_and_are_sent_once(objects: ObjectStore, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "a.txt").write_text("alpha")
    (tree / "d" / "same.txt").write_text("alpha")
    (tree / "d" / "b.bin").write_bytes(os.urandom(5000))
    (tree / "d" / "ln").symlink_to("a.txt")
    blobs = BlobStore(objects, tmp_path / "known")
    entries = scan_files(tree, ["d"], blobs)
    assert len(objects.keys("blobs/")) == 2, "two distinct contents, two blobs"
    fresh = BlobStore(objects)  # another machine: knows nothing yet
    assert fresh.missing({e.sha256 for e in entries if e.sha256}) == set()
    materialize(entries, tmp_path / "out", fresh)
    for name in ("a.txt", "same.txt", "b.bin"):
        assert (tmp_path / "out" / "d" / name).read_bytes() == (tree / "d" / name).read_bytes()
    assert os.readlink(tmp_path / "out" / "d" / "ln") == "a.txt"


def test_wrong_region_names_the_buckets_region() -> None:
    """SeaweedFS has no regions, so AWS's answer to a request signed for the wrong region is
    replayed through botocore's own exception type."""
    from botocore.exceptions import ClientError

    from dstack.storage.s3 import S3ObjectStore, _client_error

    store = S3ObjectStore("bucket", "p", "http://127.0.0.1:9", region="us-east-1")
    response = {
        "Error": {"Code": "AuthorizationHeaderMalformed", "Message": "the region is wrong"},
        "ResponseMetadata": {"HTTPHeaders": {"x-amz-bucket-region": "eu-west-1"}},
    }
    error = _client_error(ClientError(response, "ListObjectsV2"), "list", "s3://bucket/p", store)
    assert "wrong region (the bucket is in eu-west-1)" in error.message
    assert error.hint == "set store.region: eu-west-1 in DSTACK_HOME/config.yaml"


def test_s3_models_are_cached_and_a_damaged_cache_is_parsed_again(
    s3_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstack.storage.s3 import S3ObjectStore

    for key, value in s3_server.env().items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    endpoint = s3_server.endpoint  # type: ignore[attr-defined]
    cache = tmp_path / "sdk-models"
    first = S3ObjectStore("models", "", endpoint, model_cache=cache)
    first.ensure_bucket()
    pickles = sorted(cache.iterdir())
    assert len(pickles) >= 3, "the S3 model, its endpoint rules and the endpoint catalogue"
    for path in pickles:
        path.write_bytes(b"not a pickle")
    second = S3ObjectStore("models", "", endpoint, model_cache=cache)
    second.put_bytes("k", b"v")
    assert first.get_bytes("k") == b"v"
    assert all(p.read_bytes() != b"not a pickle" for p in pickles), "damaged entries rewritten"
