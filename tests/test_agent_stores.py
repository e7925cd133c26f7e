"""The host agent writing to Azure Blob and Google Cloud Storage: a job on a pool host saves
its log, status and artifacts to the bucket itself, under rights that cover its own run only.

Real parts: sshd in a network namespace (the host), Azurite and fake-gcs-server listening on
the outside end of its veth pair (the buckets), the dstack CLI in subprocesses. Azurite checks
SAS tokens (permissions, the blob they name, expiry); fake-gcs-server checks no signature and
no policy, so for GCS these tests show only that the uploads work and that the policy signed
says what it should (its text and its signature are checked here, not enforced by a server).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from buckets import Azurite, Service, start_azurite, start_gcs_emulator
from conftest import Project, wait_for
from sshd import SSHServer
from test_agent import TRAIN, start_on_box
from test_buckets import new_bucket

from dstack.agent import azblob
from dstack.agent.keys import job_prefix, log_prefix, status_key
from dstack.agent.store import GrantedStore
from dstack.errors import StoreError
from dstack.storage.objects import ObjectStore
from dstack.storage.store import artifact_key


@dataclass(frozen=True)
class StoresLab:
    """A namespace host that reaches an Azurite and a fake-gcs-server directly."""

    host: SSHServer
    azurite: Azurite
    gcs: Service
    gcs_endpoint: str
    key_file: Path  # a throw-away service account's key: what signs GCS policies

    def env(self, cloud: str) -> dict[str, str]:
        if cloud == "az":
            return {"AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string}
        return {
            "STORAGE_EMULATOR_HOST": self.gcs_endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.key_file),
        }

    def store(self, cloud: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
        """The bucket as its owner (or a teammate) sees it, with full rights."""
        for name, value in self.env(cloud).items():
            monkeypatch.setenv(name, value)
        if cloud == "az":
            from dstack.storage.azure import AzureObjectStore

            return AzureObjectStore(bucket, "team")
        from dstack.storage.gcs import GCSObjectStore

        return GCSObjectStore(bucket, "team", "test")


def service_account_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": "test",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "dstack-test@test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(info))
    return path


@pytest.fixture(scope="module")
def stores_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoresLab]:
    from sshd import add_netns, make_server

    space = add_netns(4)
    server: SSHServer | None = None
    services: list[Service] = []
    try:
        server = make_server("h4", "dstacktest4", space.inside, netns=space.name)
        azurite = start_azurite(tmp_path_factory.mktemp("azurite-lab"), ip=space.outside)
        services.append(azurite)
        gcs = start_gcs_emulator(tmp_path_factory.mktemp("gcs-lab"), space.outside)
        endpoint = gcs.endpoint
        services.append(gcs)
        key = service_account_key(tmp_path_factory.mktemp("sa") / "key.json")
        yield StoresLab(server, azurite, gcs, endpoint, key)
    finally:
        for service in services:
            service.stop()
        if server is not None:
            server.stop()
        space.delete()


def read_log(store: ObjectStore, run: str, job: str) -> bytes:
    return b"".join(store.get_bytes(k) for k in store.keys(log_prefix(run, job)))


def read_json(store: ObjectStore, key: str) -> dict[str, object]:
    return json.loads(store.get_bytes(key)) if store.exists(key) else {}


@pytest.mark.parametrize("cloud", ["az", "gs"])
def test_the_host_saves_its_job_to_the_bucket_itself_and_a_teammate_gets_it(
    stores_lab: StoresLab,
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cloud: str,
) -> None:
    bucket = new_bucket()
    url = f"{cloud}://{bucket}/team"
    project.extra_env = stores_lab.env(cloud)
    extra = ["--project", "test"] if cloud == "gs" else []
    project.dstack("init", "--store", url, *extra, check=True)
    project.dstack(*stores_lab.host.pool_add_args("box"), check=True)
    store = stores_lab.store(cloud, bucket, monkeypatch)
    gates = stores_lab.host.home / "gates"
    gates.mkdir(exist_ok=True)
    os.chmod(gates, 0o777)
    gate = gates / f"go-{tmp_path.name}"
    project.workflows(TRAIN.format(gate=gate))

    proc, run = start_on_box(project)
    manifest = artifact_key(run, "train")
    # while it runs: its log and the live checkpoint reach the bucket from the host
    wait_for(lambda: b"epoch 1" in read_log(store, run, "train"), 30, what="the log")
    wait_for(
        lambda: "ckpt/w1.bin" in json.dumps(read_json(store, manifest)), 30, what="the live ckpt"
    )
    assert read_json(store, status_key(run, "train"))["state"] == "running"
    gate.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"box saves train's log and artifacts to {url} itself" in err
    sealed = read_json(store, manifest)
    assert sealed["state"] == "complete"
    assert {e["path"] for e in sealed["entries"]} == {  # type: ignore[attr-defined]
        "out/model.bin",
        "out/model.sha",
        "ckpt/w1.bin",
    }
    status = read_json(store, status_key(run, "train"))
    assert (status["state"], status["exit_code"], status["host"]) == ("sealed", 0, "box")
    assert b"epoch 2" in read_log(store, run, "train")
    # a teammate sharing the bucket gets what the host sent, checked by its hash
    teammate = Project(project.root, tmp_path / "home2")
    teammate.extra_env = stores_lab.env(cloud)
    teammate.dstack("init", "--store", url, *extra, check=True)
    dest = tmp_path / "got"
    teammate.dstack("artifacts", "download", run, "-o", str(dest), check=True)
    model = (dest / "out" / "model.bin").read_bytes()
    assert hashlib.sha256(model).hexdigest() == (dest / "out/model.sha").read_text().strip()


def _refused(action: Callable[[], object]) -> StoreError:
    with pytest.raises(StoreError) as caught:
        action()
    assert "sig=" not in caught.value.message.lower()  # the token is never in a message
    return caught.value


def test_azure_grants_let_the_host_write_only_its_runs_keys(
    stores_lab: StoresLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores_lab.store("az", new_bucket(), monkeypatch)
    store.ensure_bucket()
    store.put_bytes("blobs/aa/one", b"one")  # a blob an earlier run stored
    store.put_bytes("tags/best", b"the team's tag")
    store.put_bytes(artifact_key("r0", "train"), b"another run's manifest")
    scopes = ["blobs/", job_prefix("r1", "train"), artifact_key("r1", "train")]
    grants = store.upload_grants(scopes, 3600)
    assert grants is not None
    host = GrantedStore(grants, store.url)

    # what the agent writes: new blobs and log parts once, its status and manifest again
    host.put_bytes("blobs/bb/two", b"two")
    host.put_bytes(f"{log_prefix('r1', 'train')}000000000000", b"epoch 1\n")
    for n in range(2):
        host.put_bytes(status_key("r1", "train"), f"status {n}".encode())
        host.put_bytes(artifact_key("r1", "train"), f"manifest {n}".encode())
    assert store.get_bytes("blobs/bb/two") == b"two"
    assert store.get_bytes(status_key("r1", "train")) == b"status 1"
    assert store.get_bytes(artifact_key("r1", "train")) == b"manifest 1"

    # a blob already there is never replaced: Azure refuses, the agent takes it as stored
    host.put_bytes("blobs/aa/one", b"other bytes")
    assert store.get_bytes("blobs/aa/one") == b"one"
    create_only = next(g for g in grants if g.scope == "blobs/")
    as_is = replace(create_only, fields={"sas": create_only.fields["sas"]})
    assert "HTTP 403" in _refused(lambda: azblob.send(as_is, "team/blobs/aa/one", b"x")).message
    # nothing outside the run's keys that exists can be replaced, with any of its grants
    for key in ("tags/best", artifact_key("r0", "train")):
        for grant in grants:
            if grant.fields.get("once") == "1":
                azblob.send(grant, f"team/{key}", b"forged")  # taken as there: not written
            else:
                _refused(lambda g=grant, k=key: azblob.send(g, f"team/{k}", b"forged"))
    assert store.get_bytes("tags/best") == b"the team's tag"
    assert store.get_bytes(artifact_key("r0", "train")) == b"another run's manifest"
    _refused(lambda: host.put_bytes("tags/best", b"forged"))  # no grant names it
    # no grant reads, lists or deletes
    base = grants[0].url
    for grant in grants:
        sas = grant.fields["sas"]
        for method, target in [
            ("GET", f"{base}/team/blobs/aa/one?{sas}"),
            ("GET", f"{base}?restype=container&comp=list&{sas}"),
            ("DELETE", f"{base}/team/{grant.scope}?{sas}"),
        ]:
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(urllib.request.Request(target, method=method))
            assert denied.value.code == 403, (method, target.split("?")[0])
    assert store.exists(status_key("r1", "train"))
    # grants whose time is up are refused
    expired = store.upload_grants(scopes, -60)
    assert expired is not None
    for grant in expired:
        late = GrantedStore([grant], store.url)
        _refused(lambda s=late, k=grant.scope: s.put_bytes(f"{k}x" if k[-1] == "/" else k, b"x"))


def test_download_links_read_one_object_only(
    stores_lab: StoresLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores_lab.store("az", new_bucket(), monkeypatch)
    store.ensure_bucket()
    store.put_bytes("jobs/r1/train/stop", b"stop")
    store.put_bytes("tags/best", b"tag")
    link = store.download_url("jobs/r1/train/stop", 60)
    assert link is not None
    with urllib.request.urlopen(link) as answer:
        assert answer.read() == b"stop"
    other = link.replace("jobs/r1/train/stop", "tags/best")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(other)
    assert denied.value.code == 403


def test_gcs_policies_name_only_the_runs_keys_and_are_signed_by_the_service_account(
    stores_lab: StoresLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fake-gcs-server enforces no policy: what is checked is the policy itself."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    bucket = new_bucket()
    store = stores_lab.store("gs", bucket, monkeypatch)
    store.ensure_bucket()
    scopes = ["blobs/", job_prefix("r1", "train"), artifact_key("r1", "train")]
    grants = store.upload_grants(scopes, 3600)
    assert grants is not None and [g.scope for g in grants] == scopes
    info = json.loads(stores_lab.key_file.read_text())
    public = serialization.load_pem_private_key(info["private_key"].encode(), None).public_key()
    for grant in grants:
        policy = grant.fields["policy"].encode()
        signature = bytes.fromhex(grant.fields["x-goog-signature"])
        public.verify(signature, policy, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg]
        conditions = json.loads(base64.b64decode(policy))["conditions"]
        exact = "starts-with" if grant.scope.endswith("/") else "eq"
        assert [exact, "$key", f"team/{grant.scope}"] in conditions
        assert {"bucket": bucket} in conditions
        assert grant.fields["x-goog-credential"].startswith(info["client_email"] + "/")
    # the uploads themselves work (the emulator takes any form)
    host = GrantedStore(grants, store.url)
    host.put_bytes(status_key("r1", "train"), b"status")
    assert store.get_bytes(status_key("r1", "train")) == b"status"
    link = store.download_url(status_key("r1", "train"), 60)
    assert link is not None and "X-Goog-Signature=" in link
    with urllib.request.urlopen(link) as answer:
        assert answer.read() == b"status"
