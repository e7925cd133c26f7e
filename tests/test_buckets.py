"""Bucket stores against real servers: SeaweedFS for S3, Azurite for Azure Blob, an emulator for GCS.

A team shares one bucket: runs, manifests and tags written by one DSTACK_HOME are seen by another.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buckets import ADMIN, READER, SeaweedS3
from conftest import LIVE_MOUNT, Project, wait_for
from test_artifacts import PRODUCE as PRODUCE_ONLY

from dstack.storage.blobs import CHUNK_SIZE, chunk_tree

PRODUCE = (
    PRODUCE_ONLY
    + """
  - name: consume
    deps: [{tag: best}]
    commands:
      - cat out/a.txt out/sub/b.txt && cmp out/big.bin out/big.bin && readlink out/link
"""
)


def new_bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def use_s3(project: Project, server: SeaweedS3, bucket: str) -> str:
    url = f"s3://{bucket}/team"
    project.extra_env = server.env()
    project.dstack("init", "--store", url, "--endpoint-url", server.endpoint, check=True)
    return url


@pytest.fixture
def teammate(project: Project, tmp_path: Path) -> Iterator[Project]:
    """A second DSTACK_HOME on the same repository: another person sharing the bucket."""
    other = Project(project.root, tmp_path / "home2")
    yield other
    other.cleanup()


def tag_one_file(project: Project, rel: str, text: str, tag: str) -> str:
    """Store one file as a tagged artifact set; returns its blob's hash."""
    project.write(rel, text)
    project.dstack("tags", "add", tag, "-a", rel.split("/")[0], check=True)
    listed = json.loads(project.dstack("artifacts", "list", f":{tag}", "--json", check=True).stdout)
    return str(listed["upload"]["files"][0]["sha256"])


def versions(server: SeaweedS3, bucket: str, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    pages = server.client().get_paginator("list_object_versions")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            found[item["Key"]] = found.get(item["Key"], 0) + 1
    return found


def test_run_in_a_bucket_is_shared_by_tag_with_a_second_home(
    project: Project, teammate: Project, s3_server: SeaweedS3, tmp_path: Path
) -> None:
    bucket = new_bucket()
    project.extra_env = s3_server.env()
    done = project.dstack(
        "init", "--store", f"s3://{bucket}/team", "--endpoint-url", s3_server.endpoint, check=True
    )
    assert "created bucket" in done.stderr and "versioning" in done.stderr
    client = s3_server.client()
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    project.workflows(PRODUCE)
    produced = project.dstack("run", "produce", "-t", "best", check=True)
    run = project.last_run()["name"]
    assert f"dstack: saved 4 files (2.86MB) of produce to s3://{bucket}/team" in produced.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"team/manifests/{run}/produce.json" in keys and f"team/runs/{run}.json" in keys
    assert any(k.startswith("team/tags/best/") for k in keys)
    assert not (project.home / "store" / "blobs").exists(), "nothing is kept in the local store"

    use_s3(teammate, s3_server, bucket)
    shared = {r["name"]: r for r in teammate.ps()}
    assert shared[run]["status"] == "done" and shared[run]["workflow"] == "produce"
    tags = json.loads(teammate.dstack("tags", "list", "--json", check=True).stdout)
    assert [(t["name"], t["run"]) for t in tags] == [("best", run)]
    target = tmp_path / "dl"
    teammate.dstack("artifacts", "download", ":best", "-o", str(target), check=True)
    job_out = project.home / "runs" / run / "produce" / "work" / "out"
    for rel in ("a.txt", "sub/b.txt", "big.bin"):
        assert (target / "out" / rel).read_bytes() == (job_out / rel).read_bytes()
    assert os.readlink(target / "out" / "link") == "a.txt"
    used = teammate.dstack("run", "consume", check=True)
    assert used.stdout.split() == ["one", "two", "a.txt"]
    logs = teammate.dstack("logs", run)
    assert logs.returncode == 1 and "its logs are on their machine" in logs.stderr

    # the run record was rewritten when the run ended; the bucket kept the first version
    history = client.list_object_versions(Bucket=bucket, Prefix=f"team/runs/{run}.json")
    assert len(history["Versions"]) == 2
    oldest = next(v for v in history["Versions"] if not v["IsLatest"])
    first = client.get_object(
        Bucket=bucket, Key=f"team/runs/{run}.json", VersionId=oldest["VersionId"]
    )
    assert json.loads(first["Body"].read())["status"] == "submitted"


def test_resync_uploads_nothing_even_from_a_home_that_never_saw_the_files(
    project: Project, teammate: Project, s3_server: SeaweedS3
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    data = project.root / "data"
    data.mkdir(parents=True)
    for i in range(300):  # more than one listing's worth of unknown blobs
        (data / f"f{i:03}.txt").write_text(f"file {i}\n" * 10)
    project.dstack("tags", "add", "v1", "-a", "data", check=True)
    before = versions(s3_server, bucket, "team/blobs/")
    assert len(before) == 300 and set(before.values()) == {1}
    project.dstack("tags", "add", "v2", "-a", "data", check=True)
    use_s3(teammate, s3_server, bucket)
    teammate.dstack("tags", "add", "v3", "-a", "data", check=True)
    assert versions(s3_server, bucket, "team/blobs/") == before, "no blob was uploaded again"
    tags = json.loads(teammate.dstack("tags", "list", "--json", check=True).stdout)
    manifests = {t["name"]: t["artifacts"]["upload"] for t in tags}
    client = s3_server.client()
    bodies = {
        name: json.loads(client.get_object(Bucket=bucket, Key=f"team/{key}")["Body"].read())
        for name, key in manifests.items()
    }
    assert bodies["v1"]["entries"] == bodies["v2"]["entries"] == bodies["v3"]["entries"]


def test_upload_killed_midway_leaves_no_manifest_and_resumes_with_what_is_missing(
    project: Project, teammate: Project, s3_server: SeaweedS3, tmp_path: Path
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    data = project.root / "data"
    data.mkdir(parents=True)
    for i in range(600):
        (data / f"part-{i:03}.bin").write_bytes(os.urandom(128 * 1024))
    proc = project.popen("tags", "add", "snap", "-a", "data")
    client = s3_server.client()

    def some_blobs() -> bool:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="team/blobs/", MaxKeys=1000)
        return listed.get("KeyCount", 0) >= 50

    wait_for(some_blobs, timeout=60, interval=0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    stored = versions(s3_server, bucket, "team/blobs/")
    assert 50 <= len(stored) < 600, "killed while blobs were going up"
    leftovers = client.list_objects_v2(Bucket=bucket, Prefix="team/").get("Contents", [])
    assert not [o["Key"] for o in leftovers if "/manifests/" in o["Key"] or "/tags/" in o["Key"]]
    assert project.dstack("tags", "list", "--json", check=True).stdout.strip() == "[]"

    project.dstack("tags", "add", "snap", "-a", "data", check=True)
    after = versions(s3_server, bucket, "team/blobs/")
    assert len(after) == 600 and set(after.values()) == {1}, "only missing blobs were sent"
    use_s3(teammate, s3_server, bucket)
    teammate.dstack("artifacts", "download", ":snap", "-o", str(tmp_path / "dl"), check=True)
    for path in sorted(data.iterdir()):
        assert (tmp_path / "dl" / "data" / path.name).read_bytes() == path.read_bytes()


def write_large(path: Path, size: int = CHUNK_SIZE + 3 * 1024**2) -> str:
    """A file of one chunk and a bit (two chunks in a bucket); returns its sha256."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size // 1024**2):
            block = os.urandom(1024**2)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def test_large_file_goes_up_in_chunks_and_comes_back_whole(
    project: Project, teammate: Project, s3_server: SeaweedS3, tmp_path: Path
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    sha = write_large(project.root / "weights" / "model.bin")
    project.dstack("tags", "add", "w", "-a", "weights", check=True)
    blobs = versions(s3_server, bucket, "team/blobs/")
    assert len(blobs) == 2, "two chunks (a whole one and the rest), no whole-file blob"
    listed = json.loads(project.dstack("artifacts", "list", ":w", "--json", check=True).stdout)
    [entry] = listed["upload"]["files"]
    assert len(entry["chunks"]) == 2 and entry["sha256"] == chunk_tree(entry["chunks"])
    project.dstack("tags", "add", "w2", "-a", "weights", check=True)
    assert versions(s3_server, bucket, "team/blobs/") == blobs, "unchanged: nothing sent"

    use_s3(teammate, s3_server, bucket)
    teammate.dstack("artifacts", "download", ":w", "-o", str(tmp_path / "dl"), check=True)
    model = tmp_path / "dl" / "weights" / "model.bin"
    assert model.read_bytes() == (project.root / "weights" / "model.bin").read_bytes()
    teammate.workflows("""
        workflows:
          - name: use
            deps: [{tag: w}]
            commands: [sha256sum weights/model.bin]
    """)
    used = teammate.dstack("run", "use", check=True)
    assert used.stdout.split()[0] == sha


def test_corrupted_blob_in_the_bucket_is_named_on_download(
    project: Project, teammate: Project, s3_server: SeaweedS3, tmp_path: Path
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    sha = tag_one_file(project, "model/weights.bin", "the real weights\n", "m")
    s3_server.client().put_object(
        Bucket=bucket, Key=f"team/blobs/{sha[:2]}/{sha[2:]}", Body=b"tampered\n"
    )
    use_s3(teammate, s3_server, bucket)
    done = teammate.dstack("artifacts", "download", ":m", "-o", str(tmp_path / "dl"))
    assert done.returncode == 1
    assert "'model/weights.bin' is corrupted in the store s3://" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "dl" / "model" / "weights.bin").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "../../escaped.txt", "size": 3, "mode": 420}, "is unsafe"),
        ({"path": "/tmp/escaped.txt", "size": 3, "mode": 420}, "is unsafe"),
        ({"path": "out/ln", "size": 0, "mode": 511, "link": "../../.."}, "leads outside"),
    ],
)
def test_tampered_manifests_in_the_bucket_write_nothing(
    project: Project,
    s3_server: SeaweedS3,
    tmp_path: Path,
    entry: dict[str, object],
    message: str,
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    sha = tag_one_file(project, "f.txt", "abc", "good")
    evil = {"version": 1, "state": "complete", "paths": ["."], "entries": []}
    evil["entries"] = [
        {"path": "out/ok.txt", "size": 3, "mode": 420, "sha256": sha, "link": None},
        {"sha256": sha if "link" not in entry else "", "link": None, **entry},
    ]
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="team/manifests/evil-run/x.json", Body=json.dumps(evil))
    record = {
        "name": "evil-run",
        "workflow": "x",
        "status": "done",
        "created_at": 1.0,
        "finished_at": 2.0,
        "exit_code": 0,
        "tag": None,
        "owner": "mallory@elsewhere",
        "manifests": {"x": "manifests/evil-run/x.json"},
    }
    client.put_object(Bucket=bucket, Key="team/runs/evil-run.json", Body=json.dumps(record))
    target = tmp_path / "deep" / "dl"
    done = project.dstack("artifacts", "download", "evil-run", "-o", str(target))
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()
    assert not target.exists(), "a tampered manifest writes nothing at all"


def test_two_people_moving_one_tag_at_once_never_corrupt_it(
    project: Project, teammate: Project, s3_server: SeaweedS3
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    use_s3(teammate, s3_server, bucket)
    project.write("a/x.txt", "a")
    project.write("b/x.txt", "b")
    project.dstack("tags", "add", "a", "-a", "a", check=True)
    teammate.dstack("tags", "add", "b", "-a", "b", check=True)
    run_a = json.loads(project.dstack("tags", "list", "--json", check=True).stdout)
    runs = {t["name"]: t["run"] for t in run_a}
    errors: list[str] = []

    def mover(who: Project, run: str) -> None:
        for _ in range(4):
            done = who.dstack("tags", "add", "best", "-r", run, "--move")
            if done.returncode != 0:
                errors.append(done.stderr)

    threads = [
        threading.Thread(target=mover, args=(project, runs["a"])),
        threading.Thread(target=mover, args=(teammate, runs["b"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    history = json.loads(project.dstack("tags", "history", "best", "--json", check=True).stdout)
    assert len(history) == 8 and {h["run_name"] for h in history} == {runs["a"], runs["b"]}
    mine = json.loads(project.dstack("tags", "list", "--json", check=True).stdout)
    theirs = json.loads(teammate.dstack("tags", "list", "--json", check=True).stdout)
    best = [t for t in mine if t["name"] == "best"]
    assert best == [t for t in theirs if t["name"] == "best"]
    assert best[0]["run"] == history[-1]["run_name"], "the latest event is the tag's value"
    table = project.dstack("tags", "history", "best", check=True).stdout
    assert table.count("set") == 8


def test_moving_a_tag_keeps_its_history_and_old_artifacts(
    project: Project, s3_server: SeaweedS3, tmp_path: Path
) -> None:
    use_s3(project, s3_server, new_bucket())
    project.write("m/w.txt", "v1")
    project.dstack("tags", "add", "prod", "-a", "m", check=True)
    again = project.dstack("tags", "add", "prod", "-a", "m")
    assert again.returncode == 1 and "already exists" in again.stderr and "--move" in again.stderr
    project.write("m/w.txt", "v2")
    project.dstack("tags", "add", "prod", "-a", "m", "--move", check=True)
    history = json.loads(project.dstack("tags", "history", "prod", "--json", check=True).stdout)
    assert [h["action"] for h in history] == ["set", "set"]
    first_run = history[0]["run_name"]
    project.dstack("artifacts", "download", first_run, "-o", str(tmp_path / "old"), check=True)
    project.dstack("artifacts", "download", ":prod", "-o", str(tmp_path / "new"), check=True)
    assert (tmp_path / "old" / "m" / "w.txt").read_text() == "v1"
    assert (tmp_path / "new" / "m" / "w.txt").read_text() == "v2"
    project.dstack("tags", "delete", "prod", check=True)
    gone = project.dstack("artifacts", "download", ":prod", "-o", str(tmp_path / "x"))
    assert gone.returncode == 1 and "No tag named 'prod'" in gone.stderr
    actions = json.loads(project.dstack("tags", "history", "prod", "--json", check=True).stdout)
    assert [h["action"] for h in actions] == ["set", "set", "delete"]


def test_mount_artifact_is_in_the_bucket_within_two_seconds(
    project: Project, s3_server: SeaweedS3
) -> None:
    bucket = new_bucket()
    use_s3(project, s3_server, bucket)
    project.workflows(LIVE_MOUNT)
    project.dstack("run", "live", "-d", check=True)
    run = project.last_run()["name"]
    client = s3_server.client()

    def in_bucket() -> float | None:
        import time

        try:
            raw = client.get_object(Bucket=bucket, Key=f"team/manifests/{run}/live.json")
        except client.exceptions.NoSuchKey:
            return None
        paths = {e["path"]: e["sha256"] for e in json.loads(raw["Body"].read())["entries"]}
        sha = paths.get("ckpt/written-at")
        if sha is None:
            return None
        client.head_object(Bucket=bucket, Key=f"team/blobs/{sha[:2]}/{sha[2:]}")
        return time.time()

    wait_for(in_bucket, timeout=25, interval=0.05)
    assert project.last_run()["status"] == "running", "saved while the job still runs"
    project.dstack("stop", run, "-x", check=True)


@pytest.mark.parametrize(
    ("keys", "endpoint", "expected"),
    [
        (("nobody", "wrong-secret"), None, "the credentials were refused (InvalidAccessKeyId)"),
        (READER, None, "permission denied"),
        (ADMIN, "http://127.0.0.1:9", "the endpoint is unreachable"),
    ],
)
def test_init_says_what_is_wrong_with_the_bucket(
    project: Project,
    s3_server: SeaweedS3,
    keys: tuple[str, str],
    endpoint: str | None,
    expected: str,
) -> None:
    bucket = new_bucket()
    if keys == READER:
        s3_server.client().create_bucket(Bucket=bucket)
    project.extra_env = {**s3_server.env(keys), "AWS_MAX_ATTEMPTS": "1"}
    done = project.dstack(
        "init", "--store", f"s3://{bucket}", "--endpoint-url", endpoint or s3_server.endpoint
    )
    assert done.returncode == 1, done.stderr
    assert expected in done.stderr and "Hint:" in done.stderr and "Traceback" not in done.stderr
    assert not (project.home / "config.yaml").exists(), "a store that does not work is not saved"


def test_init_refuses_an_invalid_bucket_name_with_the_rule(
    project: Project, s3_server: SeaweedS3
) -> None:
    project.extra_env = s3_server.env()
    done = project.dstack("init", "--store", "s3://pb/x", "--endpoint-url", s3_server.endpoint)
    assert done.returncode == 1 and "'pb' is not a valid bucket name" in done.stderr
    assert "3-63 lowercase letters" in done.stderr


def test_bad_store_urls_are_refused_with_the_field(project: Project) -> None:
    done = project.dstack("init", "--store", "ftp://x/y")
    assert done.returncode == 2 and done.stderr.startswith("Error: --store: 'ftp://x/y'")
    assert "not a store URL" in done.stderr and "s3://bucket/prefix" in done.stderr
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text("store:\n  url: s3://\n")
    project.workflows("workflows:\n  - name: w\n    commands: [true]\n")
    bad = project.dstack("run", "w")
    assert bad.returncode == 2 and "config.yaml:2: field 'store.url': 's3://' is not" in bad.stderr


def test_cli_without_a_bucket_imports_no_cloud_sdk(project: Project) -> None:
    code = (
        "import sys, runpy; sys.argv = ['dstack', 'ps']\n"
        "try:\n    runpy.run_module('dstack', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'google.cloud.storage', 'azure.storage.blob')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=project.env(), capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("url", "sdk", "extra"),
    [
        ("s3://team-bucket/x", "botocore", "s3"),
        ("gs://team-bucket/x", "google.cloud.storage", "gcs"),
        ("az://team-bucket/x", "azure.storage.blob", "azblob"),
    ],
)
def test_a_store_without_its_sdk_names_the_extra_to_install(
    project: Project, url: str, sdk: str, extra: str
) -> None:
    """The bucket stores' SDKs are extras of their own (no Pulumi): without one, `init` says
    which to install, in one paragraph, and saves nothing."""
    code = (
        f"import sys, runpy; sys.modules[{sdk!r}] = None\n"  # as if the SDK were not installed
        f"sys.argv = ['dstack', 'init', '--store', {url!r}]\n"
        "runpy.run_module('dstack', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=project.env(), capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert f"pip install 'dstack[{extra}]'" in done.stderr and "Traceback" not in done.stderr
    assert not (project.home / "config.yaml").exists()


@pytest.mark.parametrize("cloud", ["gs", "az"])
def test_gcs_and_azure_stores_share_tagged_files_between_homes(
    request: pytest.FixtureRequest,
    project: Project,
    teammate: Project,
    tmp_path: Path,
    cloud: str,
) -> None:
    """The same commands on Google Cloud Storage (emulator) and Azure Blob (Azurite)."""
    if cloud == "gs":
        server = request.getfixturevalue("gcs_emulator")
        env = {"STORAGE_EMULATOR_HOST": server.endpoint}
        extra = ["--project", "test"]
    else:
        server = request.getfixturevalue("azurite")
        env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
        extra = []
    url = f"{cloud}://{new_bucket()}/team"
    for home in (project, teammate):
        home.extra_env = env
        home.dstack("init", "--store", url, *extra, check=True)
    project.write("data/a.txt", "alpha\n")
    project.write("data/sub/b.bin", "beta" * 1000)
    project.dstack("tags", "add", "ds", "-a", "data", check=True)
    tags = json.loads(teammate.dstack("tags", "list", "--json", check=True).stdout)
    assert [t["name"] for t in tags] == ["ds"]
    assert [r["name"] for r in teammate.ps()] == [tags[0]["run"]]
    teammate.dstack("artifacts", "download", ":ds", "-o", str(tmp_path / "dl"), check=True)
    assert (tmp_path / "dl" / "data" / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "dl" / "data" / "sub" / "b.bin").read_text() == "beta" * 1000
