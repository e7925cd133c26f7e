"""A pool host's blob cache is shared by every laptop and teammate that logs in as its user:
uploads of one blob at once never collide, a blob is checked by digest before a job uses it,
and what a killed writer left behind is swept. Against a real sshd on loopback."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd import SSHServer

from dstack.execution.remote_tree import place_on_host
from dstack.scripts import load
from dstack.ssh.connect import HostAddress, connect
from dstack.ssh.remote import Remote
from dstack.storage.blobs import CHUNK_SIZE, chunk_tree
from dstack.storage.manifest import Entry, scan_files
from dstack.storage.objects import LocalObjectStore
from dstack.storage.store import Store

WRITERS = 8


@dataclass
class Host:
    server: SSHServer
    address: HostAddress
    known_hosts: Path
    folder: str  # this test's own folder on the host, removed after

    def remote(self) -> Remote:
        return Remote(self.address, self.known_hosts, retry_for=10.0)

    def ls(self, folder: str) -> list[str]:
        return self.server.ssh(f"ls -A {folder}").split()


@pytest.fixture
def host(sshd_local: SSHServer, tmp_path: Path) -> Iterator[Host]:
    known_hosts = tmp_path / "known_hosts"
    address = HostAddress(
        "box", sshd_local.host, sshd_local.port, sshd_local.user, str(sshd_local.key)
    )
    connect(address, known_hosts, pin=True).close()
    folder = f"{sshd_local.home}/hc-{uuid.uuid4().hex[:12]}"  # absolute, as dstack's are
    yield Host(sshd_local, address, known_hosts, folder)
    sshd_local.ssh(f"rm -rf {folder}")


def stored_tree(tmp_path: Path) -> tuple[Store, list[Entry]]:
    """A few files, one of 2 MB, in a local store: what a job's code would be."""
    root = tmp_path / "code"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(2 * 1024**2))
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    store = Store(LocalObjectStore(tmp_path / "store"))
    return store, scan_files(root, ["big.bin", "a.txt", "sub"], store.blobs)


def test_many_writers_of_the_same_blobs_at_once_all_succeed(host: Host, tmp_path: Path) -> None:
    """Eight laptops place the same files on one host with a cold cache at the same moment:
    each uploads every blob, and none fails or sees another's half-written copy."""
    store, entries = stored_tree(tmp_path)
    cache = f"{host.folder}/blobs"
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        remote = host.remote()
        try:
            start.wait()
            place_on_host(remote, store.blobs, cache, f"{host.folder}/job{index}", entries)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            remote.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    sums = host.server.ssh(f"cd {host.folder} && sha256sum job*/big.bin job*/sub/b.txt")
    expected = {e.path: e.sha256 for e in entries}
    for line in sums.splitlines():
        digest, path = line.split()
        assert digest == expected[path.split("/", 1)[1]], path
    assert len(sums.splitlines()) == 2 * WRITERS
    assert sorted(host.ls(cache)) == sorted({e.sha256 for e in entries}), "a temp file is left"


def test_a_damaged_blob_in_the_cache_is_replaced_not_used(host: Host, tmp_path: Path) -> None:
    store, entries = stored_tree(tmp_path)
    cache = f"{host.folder}/blobs"
    big = next(e for e in entries if e.path == "big.bin")
    remote = host.remote()
    try:
        place_on_host(remote, store.blobs, cache, f"{host.folder}/first", entries)
        host.server.ssh(f"truncate -s 1000 {cache}/{big.sha256}")  # a disk or a writer broke it
        place_on_host(remote, store.blobs, cache, f"{host.folder}/second", entries)
    finally:
        remote.close()
    placed = host.server.ssh(f"sha256sum {host.folder}/second/big.bin").split()[0]
    cached = host.server.ssh(f"sha256sum {cache}/{big.sha256}").split()[0]
    assert placed == cached == big.sha256


def test_an_upload_that_does_not_hash_to_its_name_is_refused(host: Host) -> None:
    cache = f"{host.folder}/blobs"
    claimed = hashlib.sha256(b"what the laptop sent").hexdigest()
    temp = f".tmp-{claimed}.1-abc"
    host.server.ssh(f"mkdir -p {cache} && printf damaged > {cache}/{temp}")
    remote = host.remote()
    try:
        line = f"{claimed} {temp} plain\n".encode()
        code, _, err = remote.run_script("tree-publish-blobs.sh", cache, data=line)
    finally:
        remote.close()
    assert code == 3 and b"does not hash to its name" in err
    assert host.ls(cache) == [], "the damaged copy was published or left behind"


def test_uploads_a_killed_writer_left_are_swept_after_an_hour(host: Host) -> None:
    cache = f"{host.folder}/blobs"
    old, fresh = (f".tmp-{'a' * 64}.{n}-abc" for n in (1, 2))
    host.server.ssh(
        f"mkdir -p {cache} && touch -d '2 hours ago' {cache}/{old} && touch {cache}/{fresh}"
    )
    remote = host.remote()
    try:
        code, _, _ = remote.run_script("tree-missing-blobs.sh", cache, data=b"")
    finally:
        remote.close()
    assert code == 0
    assert host.ls(cache) == [fresh], "an upload still being written was removed, or a stale kept"


def test_the_host_names_a_chunked_file_as_the_store_does(tmp_path: Path) -> None:
    """The host's chunk-tree hash (blob-lib.sh, bash and coreutils only) is the store's;
    checked with small chunks, with the chunk size the store uses declared in the script."""
    import subprocess

    library = load("blob-lib.sh")
    assert f"CHUNK={CHUNK_SIZE}\n" in library
    small = library.replace(f"CHUNK={CHUNK_SIZE}", "CHUNK=100")
    for size in (100, 1550):
        data = os.urandom(size)
        (tmp_path / "f").write_bytes(data)
        chunks = [hashlib.sha256(data[i : i + 100]).hexdigest() for i in range(0, size, 100)]
        got = subprocess.run(
            ["bash", "-c", small + '\nblob_digest "$1" tree', "t", str(tmp_path / "f")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert got.stdout.strip() == chunk_tree(chunks)
