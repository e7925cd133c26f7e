"""A shared store is untrusted input: manifests, digests, paths and links are checked before use,
here and on a real SSH host, and nothing a teammate uploads can replace a good blob."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import Project

from dstack.errors import ContentMismatch, StoreError
from dstack.storage.blobs import BlobStore, Upload, blob_key, chunk_tree
from dstack.storage.manifest import Entry, Manifest, materialize
from dstack.storage.objects import LocalObjectStore, check_key
from dstack.storage.tree import final_tree

SHA = hashlib.sha256(b"abc").hexdigest()


def manifest_with(**entry: object) -> bytes:
    base = {"path": "a.txt", "size": 3, "mode": 0o644, "sha256": SHA, "link": None}
    return json.dumps(
        {"version": 1, "state": "complete", "paths": ["."], "entries": [{**base, **entry}]}
    ).encode()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (manifest_with(sha256=SHA.upper()), "is not a sha256 digest"),
        (manifest_with(sha256=SHA[:63]), "is not a sha256 digest"),
        (manifest_with(sha256="../../../etc/passwd" + "0" * 45), "is not a sha256 digest"),
        (manifest_with(sha256=None), "is not a sha256 digest"),
        (manifest_with(path="/etc/passwd"), "is unsafe"),
        (manifest_with(path="../escaped.txt"), "is unsafe"),
        (manifest_with(path="a/../../b"), "is unsafe"),
        (manifest_with(path="a//b"), "is unsafe"),
        (manifest_with(path="./a"), "is unsafe"),
        (manifest_with(path="a/"), "is unsafe"),
        (manifest_with(path="a\x00b"), "is unsafe"),
        (manifest_with(path="a\nb"), "is unsafe"),
        (manifest_with(path="x" * 5000), "is unsafe"),
        (manifest_with(path=""), "is not a file name"),
        (manifest_with(path=["a"]), "is not a file name"),
        (manifest_with(size=-1), "size '-1' is not a valid number"),
        (manifest_with(size="3"), "size '3' is not a valid number"),
        (manifest_with(size=True), "size 'True' is not a valid number"),
        (manifest_with(size=10**30), "is not a valid number"),
        (manifest_with(mode=1.5), "mode '1.5' is not a valid number"),
        (manifest_with(link="/etc"), "link target '/etc' is unsafe"),
        (manifest_with(link=""), "link target '' is unsafe"),
        (manifest_with(link="a\nb"), "is unsafe"),
        (manifest_with(chunks=["00" * 32, "11" * 32]), "chunk list does not match its hash"),
        (manifest_with(chunks="00" * 32), "chunk list is malformed"),
        (manifest_with(chunks=["zz"]), "is not a sha256 digest"),
        (b"[1, 2]", "has no list of entries"),
        (b"not json at all", "is not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "is not valid JSON"),
        (json.dumps({"state": "sealed", "entries": []}).encode(), "unknown state"),
        (json.dumps({"state": "complete", "entries": [1]}).encode(), "not an object"),
        (json.dumps({"state": "complete", "entries": [], "paths": ["../x"]}).encode(), "unsafe"),
        (
            json.dumps(
                {
                    "state": "complete",
                    "entries": [
                        {"path": "a", "size": 3, "mode": 420, "sha256": SHA},
                        {"path": "a", "size": 3, "mode": 420, "sha256": SHA},
                    ],
                }
            ).encode(),
            "lists a path twice",
        ),
    ],
)
def test_a_manifest_from_the_store_is_checked_before_use(raw: bytes, says: str) -> None:
    with pytest.raises(StoreError) as caught:
        Manifest.from_json(raw, "Manifest 'manifests/r/x.json'")
    assert says in str(caught.value)
    assert "Manifest 'manifests/r/x.json'" in str(caught.value)
    assert "tampered" in str(caught.value)


def test_modes_are_masked_to_permission_bits() -> None:
    entry = Manifest.from_json(manifest_with(mode=0o107755)).entries[0]
    assert entry.mode == 0o755, "setuid, setgid, sticky and file-type bits never reach a file"


def link(path: str, target: str) -> Entry:
    return Entry(path, 0, 0o777, link=target)


def file(path: str) -> Entry:
    return Entry(path, 3, 0o644, SHA)


@pytest.mark.parametrize(
    ("layers", "says"),
    [
        ([[link("up", "..")]], "leads outside"),
        ([[link("a/b/up", "../../..")]], "leads outside"),
        # each alone stays inside; together x resolves to ./.. (the old per-manifest check
        # let this through when x came first)
        ([[link("x", "y/..")], [link("y", ".")]], "leads outside"),
        ([[link("y", ".")], [link("x", "y/..")]], "leads outside"),
        # a chain of links across three manifests that ends above the root
        ([[link("a", "b")], [link("b", "c/..")], [link("c", "..")]], "leads outside"),
        ([[link("loop1", "loop2")], [link("loop2", "loop1/x")]], "loop of links"),
        ([[link("d", "sub")], [file("d/f.txt")]], "which is a link"),
        ([[file("data")], [file("data/f.txt")]], "which is a file"),
        ([[Entry("m", 3, 0o644, "not-a-digest")]], "is not a sha256 digest"),
    ],
)
def test_the_final_tree_is_judged_whole(layers: list[list[Entry]], says: str) -> None:
    with pytest.raises(StoreError) as caught:
        final_tree(layers)
    assert says in str(caught.value)


def test_links_inside_the_tree_pass_and_later_layers_replace_earlier() -> None:
    tree = final_tree(
        [
            [file("a.txt"), link("latest", "runs/3"), link("runs/3/up", "../..")],
            [Entry("a.txt", 5, 0o4755, "ab" * 32), link("alias", "latest/up/a.txt")],
        ]
    )
    by_path = {e.path: e for e in tree}
    assert by_path["a.txt"].sha256 == "ab" * 32 and by_path["a.txt"].mode == 0o755
    assert set(by_path) == {"a.txt", "latest", "runs/3/up", "alias"}


def local_blobs(root: Path, content: bytes = b"abc") -> BlobStore:
    blobs = BlobStore(LocalObjectStore(root / "store"))
    source = root / "source.bin"
    source.write_bytes(content)
    blobs.put(source)
    return blobs


def test_a_tampered_tree_writes_nothing(tmp_path: Path) -> None:
    blobs = local_blobs(tmp_path)
    dest = tmp_path / "job" / "work"
    with pytest.raises(StoreError):
        materialize([file("first.txt"), link("x", "y/.."), link("y", ".")], dest, blobs)
    assert not dest.exists() or not any(dest.iterdir()), "checked whole before any write"


def test_nothing_is_written_through_a_link_already_on_disk(tmp_path: Path) -> None:
    blobs = local_blobs(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "download"
    dest.mkdir()
    (dest / "models").symlink_to(outside)
    with pytest.raises(StoreError) as caught:
        materialize([file("models/a.txt")], dest, blobs)
    assert "through a link that leads out" in str(caught.value)
    assert list(outside.iterdir()) == []


def test_a_blob_shorter_than_its_manifest_says_is_refused(tmp_path: Path) -> None:
    blobs = local_blobs(tmp_path)
    with pytest.raises(StoreError) as caught:
        materialize([Entry("a.txt", 5, 0o644, SHA)], tmp_path / "out", blobs)
    assert "has 3 bytes in the store, but its manifest says 5" in str(caught.value)
    assert not (tmp_path / "out" / "a.txt").exists()


@pytest.mark.parametrize("key", ["../x", "runs/../../x", "/etc/passwd", "a//b", "a/./b", "a\0b"])
def test_store_keys_never_leave_the_store(tmp_path: Path, key: str) -> None:
    with pytest.raises(StoreError):
        check_key(key)
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(StoreError):
        store.get_bytes(key)
    with pytest.raises(StoreError):
        store.put_bytes(key, b"x")
    assert not (tmp_path / "x").exists()


def test_a_corrupt_local_blob_is_quarantined_so_storing_it_again_heals(tmp_path: Path) -> None:
    blobs = local_blobs(tmp_path)
    stored = tmp_path / "store" / blob_key(SHA)
    os.chmod(stored, 0o644)
    stored.write_bytes(b"abd")
    with pytest.raises(StoreError) as caught:
        blobs.get(SHA, tmp_path / "out.txt", "a.txt")
    assert "moved to" in str(caught.value) and "quarantine" in str(caught.value)
    assert not stored.exists()
    assert blobs.put(tmp_path / "source.bin") == SHA  # the producer stores it again
    blobs.get(SHA, tmp_path / "out.txt", "a.txt")
    assert (tmp_path / "out.txt").read_bytes() == b"abc"


def test_a_file_changed_after_hashing_never_replaces_or_deletes_a_good_blob(
    tmp_path: Path,
) -> None:
    """The old upload copied over the key and then deleted it when the file had changed."""
    blobs = local_blobs(tmp_path)
    source = tmp_path / "source.bin"
    signature = (source.stat().st_size, source.stat().st_mtime_ns)
    source.write_bytes(b"xyz")  # rewritten between its hashing and its upload
    changed = blobs._send(Upload(str(source), SHA, signature), False, None)
    assert changed == SHA
    stored = tmp_path / "store" / blob_key(SHA)
    assert stored.read_bytes() == b"abc"
    assert blobs._send(Upload(str(source), SHA, signature), True, None) == SHA  # hard-link path
    assert stored.read_bytes() == b"abc"


def test_an_upload_whose_bytes_do_not_match_commits_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    source = tmp_path / "f.bin"
    source.write_bytes(b"not abc")
    with pytest.raises(ContentMismatch):
        store.put_file(blob_key(SHA), source, sha256=SHA)
    assert not store.exists(blob_key(SHA))
    assert [p.name for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_chunk_list_must_name_its_file() -> None:
    chunks = ("01" * 32, "02" * 32)
    entry = Manifest.from_json(manifest_with(sha256=chunk_tree(chunks), chunks=list(chunks)))
    assert entry.entries[0].chunks == chunks


# Through the CLI: deps from two tags whose links escape only together ---------------------


def tag_link(project: Project, tag: str, path: str, target: str) -> None:
    """Tag a lone link (then remove it, so that the repo's snapshot does not carry it)."""
    made = project.root / path
    made.parent.mkdir(parents=True, exist_ok=True)
    made.symlink_to(target)
    project.dstack("tags", "add", tag, "-a", path, check=True)
    made.unlink()


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_links_of_two_inputs_that_escape_together_stop_the_job(
    project: Project, order: tuple[str, str]
) -> None:
    # alone, shared/x -> y/../.. ends at the job's root; with shared/y -> . it ends above it
    tag_link(project, "a", "shared/y", ".")
    tag_link(project, "b", "shared/x", "y/../..")
    project.workflows(
        f"""
        workflows:
          - name: use
            deps: [{{tag: {order[0]}}}, {{tag: {order[1]}}}]
            commands: [touch ran.txt]
        """
    )
    done = project.dstack("run", "use")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Link 'shared/x' -> 'y/../..' leads outside the job's files" in done.stderr
    run = project.last_run()
    assert run["status"] == "failed"
    work = project.home / "runs" / run["name"] / "use" / "work"
    assert not (work / "ran.txt").exists()
    assert not (work / "shared").exists(), "nothing of the tree was written"


def test_a_corrupt_local_blob_heals_when_its_producer_runs_again(project: Project) -> None:
    project.workflows(
        """
        workflows:
          - name: produce
            commands: [mkdir -p out, echo weights > out/w.txt]
            artifacts: [out]
          - name: consume
            deps: [{workflow: produce}]
            commands: [cat out/w.txt]
        """
    )
    project.dstack("run", "produce", check=True)
    sha = hashlib.sha256(b"weights\n").hexdigest()
    stored = project.home / "store" / blob_key(sha)
    os.chmod(stored, 0o644)
    stored.write_bytes(b"tampered\n")
    done = project.dstack("run", "consume")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "corrupted" in done.stderr + done.stdout and "quarantine" in done.stderr + done.stdout
    project.dstack("run", "produce", check=True)
    assert project.dstack("run", "consume", check=True).stdout == "weights\n"


# On a real SSH host: the script that assembles a job's files refuses the same inputs ------


@pytest.fixture
def host_remote(sshd_local: object, tmp_path: Path):  # type: ignore[no-untyped-def]
    from dstack.ssh.connect import HostAddress
    from dstack.ssh.remote import Remote

    server = sshd_local
    key = (server.folder / "host_key.pub").read_text().split()  # type: ignore[attr-defined]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} {key[0]} {key[1]}\n")  # type: ignore[attr-defined]
    address = HostAddress(
        "trust",
        server.host,  # type: ignore[attr-defined]
        server.port,  # type: ignore[attr-defined]
        server.user,  # type: ignore[attr-defined]
        str(server.key),  # type: ignore[attr-defined]
    )
    remote = Remote(address, known, retry_for=5)
    base = f"/home/{server.user}/.dstack-trust-{os.getpid()}"  # type: ignore[attr-defined]
    remote.check(f"rm -rf {base} && mkdir -p {base}")
    yield remote, base
    remote.check(f"rm -rf {base}")
    remote.close()


HOSTILE_ON_HOST = {
    "climbing path": [Entry("../escaped.txt", 3, 0o644, SHA)],
    "absolute path": [Entry("/tmp/escaped.txt", 3, 0o644, SHA)],
    "write through a link": [link("l", ".."), Entry("l/escaped.txt", 3, 0o644, SHA)],
    "absolute link": [link("l", "/tmp")],
    "chain of links": [link("x", "y/.."), link("y", ".")],
    "setuid mode": [Entry("a.txt", 3, 0o4755, SHA)],
    "digest as a path": [Entry("a.txt", 3, 0o644, "../" * 5 + "a" * 49)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ON_HOST))
def test_the_host_refuses_what_the_laptop_refuses(host_remote, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    from dstack.execution.remote_tree import place_on_host

    remote, base = host_remote
    blobs = local_blobs(tmp_path)
    target = f"{base}/runs/r/j/work"
    with pytest.raises(StoreError) as caught:
        place_on_host(remote, blobs, f"{base}/blobs", target, HOSTILE_ON_HOST[case])
    assert "refused" in str(caught.value)
    listing = remote.check(
        f"cd {base} && find . -name escaped.txt; ls -A {base}/runs/r/j 2>/dev/null; true"
    ).decode()
    assert "escaped.txt" not in listing and "work" not in listing, "the tree was removed"
    assert not Path("/tmp/escaped.txt").exists()


def test_the_host_assembles_a_sound_tree(host_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dstack.execution.remote_tree import place_on_host

    remote, base = host_remote
    blobs = local_blobs(tmp_path)
    target = f"{base}/runs/r/j/work"
    entries = [Entry("data/a.txt", 3, 0o640, SHA), link("latest", "data/a.txt")]
    place_on_host(remote, blobs, f"{base}/blobs", target, entries)
    assert remote.check(f"cat {target}/latest; stat -c %a {target}/data/a.txt").decode() == (
        "abc640\n"
    )


def test_a_repo_file_whose_name_has_a_newline_gets_a_clear_error(project: Project) -> None:
    project.workflows("workflows:\n  - {name: hi, commands: [echo hi]}\n")
    (project.root / "notes\nold.txt").write_text("x")
    done = project.dstack("run", "hi")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Cannot store 'notes\\nold.txt': file names with control characters" in done.stderr


def test_an_up_to_date_job_whose_blobs_were_lost_runs_again(project: Project) -> None:
    project.workflows(
        """
        workflows:
          - name: produce
            commands: [mkdir -p out, echo weights > out/w.txt]
            artifacts: [out]
          - name: consume
            depends-on: [produce]
            commands: [cat out/w.txt]
        """
    )
    project.dstack("run", "consume", check=True)
    stored = project.home / "store" / blob_key(hashlib.sha256(b"weights\n").hexdigest())
    os.chmod(stored, 0o644)
    stored.write_bytes(b"tampered\n")
    failed = project.dstack("run", "consume")
    assert failed.returncode != 0 and "quarantine" in failed.stderr + failed.stdout
    healed = project.dstack("run", "consume")
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout.endswith("weights\n")
    assert "missing from the store: running it again" in healed.stderr


def test_links_that_leave_the_saved_files_are_left_out_with_a_warning(project: Project) -> None:
    project.workflows(
        """
        workflows:
          - name: produce
            commands:
              - mkdir -p out && echo w > out/w.txt
              - ln -s /usr/bin/python3 out/python && ln -s ../../.. out/up && ln -s w.txt out/ok
            artifacts: [out]
          - name: consume
            deps: [{workflow: produce}]
            commands: [cat out/ok]
        """
    )
    done = project.dstack("run", "produce", check=True)
    assert "left out the link 'out/python' -> '/usr/bin/python3'" in done.stderr
    assert "left out the link 'out/up' -> '../../..'" in done.stderr
    run = project.last_run()["name"]
    listed = json.loads(project.dstack("artifacts", "list", run, "--json", check=True).stdout)
    assert {f["path"] for f in listed["produce"]["files"]} == {"out/w.txt", "out/ok"}
    assert project.dstack("run", "consume", check=True).stdout == "w\n"


def test_an_unreadable_repo_file_gets_a_clear_error() -> None:
    import shutil
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="dstack-unreadable-", dir="/tmp"))  # nobody may enter
    try:
        base.chmod(0o777)
        project = Project(base / "repo", base / "home")
        project.workflows("workflows:\n  - {name: hi, commands: [echo hi]}\n")
        secret = project.root / "private.txt"
        secret.write_text("x")
        secret.chmod(0o600)  # root's, and the command runs as nobody
        done = subprocess.run(
            [
                shutil.which("setpriv") or "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-m",
                "dstack",
                "run",
                "hi",
            ],
            cwd=project.root,
            env=project.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "Cannot read 'private.txt': permission denied" in done.stderr, done.stderr
    finally:
        shutil.rmtree(base)
