"""The object-store contract, the same for a folder, S3 (SeaweedFS), GCS (fake-gcs-server), Azure
(Azurite): conditional writes included."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import wait_for

from dstack.errors import ContentMismatch, StoreError
from dstack.storage.blobs import BlobStore, blob_key
from dstack.storage.manifest import materialize, scan_files
from dstack.storage.objects import LocalObjectStore, ObjectStore


def open_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """A fresh, empty store of the kind, on its real server."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    if kind == "file":
        store: ObjectStore = LocalObjectStore(tmp_path / "store")
    elif kind == "s3":
        from dstack.storage.s3 import S3ObjectStore

        server = request.getfixturevalue("s3_server")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        store = S3ObjectStore(bucket, "pre/fix", server.endpoint)
    elif kind == "gs":
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
    return store


@pytest.fixture(params=["file", "s3", "gs", "az"])
def objects(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    return open_store(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["s3", "gs", "az"])
def remote(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """The bucket stores only: where large files are kept as chunks."""
    return open_store(request.param, request, tmp_path, monkeypatch)


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


class Spy:
    """Records the keys a real store is asked to write."""

    def __init__(self, objects: ObjectStore) -> None:
        self.sent: list[str] = []
        original = objects.put_file

        def put_file(key: str, src: Path, *args) -> None:  # type: ignore[no-untyped-def]
            self.sent.append(key)
            original(key, src, *args)

        objects.put_file = put_file  # type: ignore[method-assign]


def small_chunks(objects: ObjectStore) -> BlobStore:
    """A blob store that chunks files over 1 MiB, so a 3 MB file makes four chunks."""
    blobs = BlobStore(objects)
    blobs.chunk_size = 1024**2
    return blobs


def big_tree(tmp_path: Path, size: int = 3 * 1024**2 + 12345) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "model.bin").write_bytes(os.urandom(size))
    return tree


def test_large_files_go_to_remote_stores_in_chunks(objects: ObjectStore, tmp_path: Path) -> None:
    tree = big_tree(tmp_path)
    blobs = BlobStore(objects, tmp_path / "known")
    blobs.chunk_size = 1024**2
    moved: list[int] = []
    meter = type("M", (), {"__call__": lambda s, n: moved.append(n), "expect": lambda s, n: 0})()
    [entry] = scan_files(tree, ["model.bin"], blobs, progress=meter)
    data = (tree / "model.bin").read_bytes()
    assert sum(moved) == len(data), "progress counts every byte once"
    if not objects.remote:
        assert entry.chunks is None, "a folder store keeps whole files (hard links, no parts)"
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
    else:
        parts = [data[i : i + 1024**2] for i in range(0, len(data), 1024**2)]
        assert entry.chunks == tuple(hashlib.sha256(p).hexdigest() for p in parts)
        digests = b"".join(hashlib.sha256(p).digest() for p in parts)
        assert entry.sha256 == hashlib.sha256(digests).hexdigest(), "named by its chunk tree"
        assert len(objects.keys("blobs/")) == 4, "four chunks, no whole-file blob"
    materialize([entry], tmp_path / "out", BlobStore(objects))
    assert (tmp_path / "out" / "model.bin").read_bytes() == data


def test_an_interrupted_chunked_upload_sends_only_missing_chunks(
    remote: ObjectStore, tmp_path: Path
) -> None:
    objects = remote
    tree = big_tree(tmp_path)
    blobs = small_chunks(objects)
    [entry] = scan_files(tree, ["model.bin"], blobs)
    assert entry.chunks is not None
    lost = [entry.chunks[1], entry.chunks[3]]  # as if the upload had died before these
    for sha in lost:
        objects.delete(blob_key(sha))
    spy = Spy(objects)
    resumed = small_chunks(objects)  # a new process: nothing known, nothing cached
    assert scan_files(tree, ["model.bin"], resumed) == [entry]
    assert sorted(spy.sent) == sorted(blob_key(s) for s in lost)


def test_a_corrupted_chunk_names_the_file(remote: ObjectStore, tmp_path: Path) -> None:
    objects = remote
    tree = big_tree(tmp_path)
    blobs = small_chunks(objects)
    [entry] = scan_files(tree, ["model.bin"], blobs)
    assert entry.chunks is not None
    sha = entry.chunks[2]
    objects.put_bytes(blob_key(sha), b"not the chunk")
    with pytest.raises(StoreError, match="'model.bin' is corrupted"):
        materialize([entry], tmp_path / "out", BlobStore(objects))
    assert not (tmp_path / "out" / "model.bin").exists(), "nothing half-written is left"
    swapped = dataclasses.replace(
        entry, chunks=(entry.chunks[1], entry.chunks[0], *entry.chunks[2:])
    )
    with pytest.raises(StoreError, match="chunk list that does not match"):
        materialize([swapped], tmp_path / "out", BlobStore(objects))


def test_chunk_lists_are_cached_and_checked_against_each_store(
    remote: ObjectStore,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dstack.storage.manifest import StatCache

    tree = big_tree(tmp_path)
    past = time.time() - 60  # settled: the stat cache remembers it
    os.utime(tree / "model.bin", (past, past))
    blobs = small_chunks(remote)
    cache = StatCache(tmp_path / "hashes.json")
    [entry] = scan_files(tree, ["model.bin"], blobs, cache)
    cache.save()
    again = StatCache.load(tmp_path / "hashes.json")
    spy = Spy(remote)
    assert scan_files(tree, ["model.bin"], blobs, again) == [entry]
    assert spy.sent == [], "an unchanged file is neither read nor sent"
    other = open_store(request.node.callspec.params["remote"], request, tmp_path, monkeypatch)
    other_blobs = small_chunks(other)
    assert scan_files(tree, ["model.bin"], other_blobs, again) == [entry]
    assert len(other.keys("blobs/")) == 4, "a store lacking the chunks gets them"
    materialize([entry], tmp_path / "out", BlobStore(other))
    assert (tmp_path / "out" / "model.bin").read_bytes() == (tree / "model.bin").read_bytes()


def test_a_file_rewritten_during_its_chunked_upload_is_left_out(
    remote: ObjectStore, tmp_path: Path
) -> None:
    tree = big_tree(tmp_path)
    blobs = small_chunks(remote)
    original = remote.put_file

    def rewrite_after_first(key, src, progress=None, span=None, sha256=None):  # type: ignore[no-untyped-def]
        original(key, src, progress, span, sha256)
        if span is not None and span[0] == 0:
            with open(src, "r+b") as out:
                out.write(b"changed")
            os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))

    remote.put_file = rewrite_after_first  # type: ignore[method-assign]
    assert scan_files(tree, ["model.bin"], blobs) == []
    remote.put_file = original  # type: ignore[method-assign]
    [entry] = scan_files(tree, ["model.bin"], blobs)
    materialize([entry], tmp_path / "out", BlobStore(remote))
    assert (tmp_path / "out" / "model.bin").read_bytes() == (tree / "model.bin").read_bytes()


def test_manifests_without_chunks_keep_their_format() -> None:
    from dstack.storage.blobs import chunk_tree
    from dstack.storage.manifest import Entry, Manifest

    plain = Manifest([Entry("a", 1, 0o644, "ab" * 32)], "complete", ["a"])
    assert b"chunks" not in plain.to_json(), "older readers and digests stay as they were"
    chunks = ("01" * 32, "02" * 32)
    chunked = Manifest([Entry("b", 9, 0o644, chunk_tree(chunks), chunks=chunks)])
    assert Manifest.from_json(chunked.to_json()) == chunked
    assert Manifest.from_json(plain.to_json()) == plain


def test_s3_refuses_bytes_that_do_not_match_their_hash(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob's sha256 goes with the upload, so the server itself refuses a file that changed
    after it was hashed; the blob store then leaves it for the next sync."""
    from dstack.errors import ContentMismatch
    from dstack.storage.blobs import Upload

    objects = open_store("s3", request, tmp_path, monkeypatch)
    src = tmp_path / "f"
    src.write_bytes(b"new content")
    stale = hashlib.sha256(b"old content").hexdigest()
    with pytest.raises(ContentMismatch):
        objects.put_file("k", src, sha256=stale)
    assert not objects.exists("k")
    st = src.stat()
    blobs = BlobStore(objects)
    assert blobs.put_many([Upload(str(src), stale, (st.st_size, st.st_mtime_ns))]) == {stale}
    assert blobs.missing([stale]) == {stale}, "no blob under a hash its bytes do not have"


def test_a_home_switching_from_a_bucket_to_a_folder_stores_whole_files_by_content(
    remote: ObjectStore, tmp_path: Path
) -> None:
    """The stat cache knows the file by its chunks; a folder store needs its content hash."""
    from dstack.storage.manifest import StatCache

    tree = big_tree(tmp_path)
    past = time.time() - 60
    os.utime(tree / "model.bin", (past, past))
    cache = StatCache()
    chunked_blobs = small_chunks(remote)
    [chunked] = scan_files(tree, ["model.bin"], chunked_blobs, cache)
    assert chunked.chunks is not None
    folder = BlobStore(LocalObjectStore(tmp_path / "folder"))
    [whole] = scan_files(tree, ["model.bin"], folder, cache)
    data = (tree / "model.bin").read_bytes()
    assert whole.chunks is None and whole.sha256 == hashlib.sha256(data).hexdigest()
    materialize([whole], tmp_path / "out", folder)
    assert (tmp_path / "out" / "model.bin").read_bytes() == data
    [again] = scan_files(tree, ["model.bin"], chunked_blobs, cache)
    assert again == chunked, "and back: the chunk list is found again"


def test_a_blob_is_committed_only_when_its_bytes_match_and_never_replaced(
    objects: ObjectStore, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(b"good bytes " * 1000)
    bad.write_bytes(b"other bytes" * 1000)  # same size: only the hash tells them apart
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    key = blob_key(sha)
    with pytest.raises(ContentMismatch):
        objects.put_file(key, bad, sha256=sha)
    assert not objects.exists(key), "bytes that do not match their name are never committed"
    objects.put_file(key, good, sha256=sha)
    objects.put_file(key, good, sha256=sha)  # a second writer of the same blob: fine
    with contextlib.suppress(ContentMismatch):  # refused, or 'already there': never replaced
        objects.put_file(key, bad, sha256=sha)
    assert objects.get_bytes(key) == good.read_bytes()
    assert [k for k in objects.keys("") if not k.startswith("blobs/")] == [], "no temp objects"


def test_a_span_rewritten_before_its_upload_is_refused(
    objects: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    span = (1 << 20, 1 << 20)
    sha = hashlib.sha256(source.read_bytes()[span[0] : span[0] + span[1]]).hexdigest()
    with open(source, "r+b") as handle:  # the chunk changes after it was hashed
        handle.seek(span[0] + span[1] - 1)
        last = handle.read(1)
        handle.seek(span[0] + span[1] - 1)
        handle.write(b"\0" if last != b"\0" else b"\1")
    with pytest.raises(ContentMismatch):
        objects.put_file(blob_key(sha), source, span=span, sha256=sha)
    assert not objects.exists(blob_key(sha))


def test_put_if_creates_once_and_replaces_only_the_version_it_read(objects: ObjectStore) -> None:
    assert objects.read_versioned("runs/r.json") is None
    assert objects.put_if("runs/r.json", b"first", None)
    assert not objects.put_if("runs/r.json", b"second", None), "create-only: the name is taken"
    found = objects.read_versioned("runs/r.json")
    assert found is not None and found[0] == b"first"
    assert objects.put_if("runs/r.json", b"updated", found[1])
    assert not objects.put_if("runs/r.json", b"stale", found[1]), "that version is gone"
    assert objects.put_if("runs/r.json", b"updated", None), "its very bytes: a write sent twice"
    assert objects.get_bytes("runs/r.json") == b"updated"
    assert not objects.put_if("runs/gone.json", b"x", found[1]), "no object has that version"
    assert objects.keys("") == ["runs/r.json"], "no temporary or lock object is listed"


def counted(data: bytes) -> int:
    return int(data.split(b" ")[0])


def add_one(objects: ObjectStore, key: str, writer: str) -> int:
    """Read-modify-write until it is not beaten; how many times it was. Each writer's bytes
    are its own (as dstack's records carry their time): equal bytes would count as one write."""
    beaten = 0
    while True:
        found = objects.read_versioned(key)
        assert found is not None
        data = f"{counted(found[0]) + 1} by {writer}".encode()
        if objects.put_if(key, data, found[1]):
            return beaten
        beaten += 1


def test_racing_conditional_writers_one_creator_wins_and_no_update_is_lost(
    objects: ObjectStore,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    writers, each = 6, 5
    with ThreadPoolExecutor(writers) as pool:
        created = list(
            pool.map(lambda i: objects.put_if("race", f"0 by {i}".encode(), None), range(writers))
        )
    assert created.count(True) == 1, created
    assert objects.get_bytes("race") == f"0 by {created.index(True)}".encode()
    with ThreadPoolExecutor(writers) as pool:
        jobs = [(w, n) for w in range(writers) for n in range(each)]
        beaten = sum(pool.map(lambda job: add_one(objects, "race", f"{job[0]}.{job[1]}"), jobs))
    assert counted(objects.get_bytes("race")) == writers * each, "no update was lost"
    assert beaten > 0, "the writers did race"


RACER = """
import sys, time
from pathlib import Path
from dstack.storage.objects import LocalObjectStore
store, me, tests = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, tests)
from test_object_stores import add_one
(store.parent / f"ready-{me}").touch()
while not (store.parent / "go").exists():  # all start together
    time.sleep(0.001)
objects = LocalObjectStore(store)
won = objects.put_if("race", f"0 by {me}".encode(), None)
print(int(won), sum(add_one(objects, "race", f"{me}.{n}") for n in range(50)))
"""


def test_processes_racing_on_a_folder_store_lose_no_update(tmp_path: Path) -> None:
    """Processes, not threads: the folder store's lock is a lock between processes."""
    import sys

    tests = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "store"), str(i), tests],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 4, timeout=60, what="racers ready")
    (tmp_path / "go").touch()
    results = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(int(won) for won, _ in results) == [0, 0, 0, 1], "one creator"
    assert sum(int(beaten) for _, beaten in results) > 0, "the processes did race"
    final = LocalObjectStore(tmp_path / "store").get_bytes("race")
    assert counted(final) == 200, "no update was lost"
