"""`dstack plan`: the chosen offer, its price and the stack's resources, offline, before launch;
and the SSH rule it shows is the one `dstack run` gives the stack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

STANDIN = Path(__file__).parent / "standin"
ADDRESS = "198.51.100.23"  # what the address service below answers (a documentation range)

GPU_JOB = """
workflows:
  - name: train
    commands: [python train.py]
    resources:
      gpu: {count: 1, name: A10G}
      interruptible: true
  - name: tiny
    commands: [echo hi]
"""


class AddressService:
    """A stand-in for checkip.amazonaws.com on 127.0.0.1: answers ``answer`` and counts asks."""

    def __init__(self) -> None:
        self.answer, self.asked = f"{ADDRESS}\n", 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                service.asked += 1
                body = service.answer.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def address_service() -> Iterator[AddressService]:
    service = AddressService()
    yield service
    service.stop()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def set_up(project: Project, config: str, address_url: str | None = None) -> None:
    """A home with this config.yaml and the GPU workflows; this machine's public address is
    looked up at ``address_url`` (by default where nothing answers: not known)."""
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(config)
    project.workflows(GPU_JOB)
    project.extra_env["DSTACK_PUBLIC_ADDRESS_URL"] = address_url or closed_port_url()


def plan_json(project: Project, *args: str) -> dict[str, Any]:
    done = project.dstack("plan", *args, "--json", check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_plan_picks_the_cheapest_allowed_offer_and_previews_its_stack(
    project: Project, address_service: AddressService
) -> None:
    set_up(project, "backends:\n  aws:\n    regions: [eu-west-1, us-west-2]\n", address_service.url)
    report = plan_json(project, "train")
    assert report["preview"] == "offline"
    [job] = report["jobs"]
    offer = job["offer"]
    assert (offer["backend"], offer["name"], offer["spot"]) == ("aws", "g5.xlarge", True)
    assert offer["region"] == "us-west-2", "the cheaper of the allowed regions"
    assert offer["gpus"] == "1x A10G" and offer["price"] == 0.3018
    assert job["cost_cap"] == round(0.3018 * 24, 2)
    by_type = {r["type"]: r for r in job["resources"]}
    assert set(by_type) == {
        "dstack:aws:Host",
        "pulumi:providers:aws",
        "aws:ec2/keyPair:KeyPair",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:ec2/instance:Instance",
    }
    ssh = by_type["aws:ec2/securityGroup:SecurityGroup"]["inputs"]
    assert ssh["port"] == "22" and ssh["from"] == f"{ADDRESS}/32"
    assert job["ssh_from"] == {
        "cidr": f"{ADDRESS}/32",
        "source": "this machine's public address",
        "problem": None,
    }
    vm = by_type["aws:ec2/instance:Instance"]["inputs"]
    assert vm["type"] == "g5.xlarge" and vm["market"] == "spot" and vm["disk GB"] == "100"
    assert vm["on shutdown"] == "terminate" and vm["image"] == "<looked up at launch>"
    assert by_type["aws:ec2/keyPair:KeyPair"]["inputs"]["key"] == "<per-run key>"
    assert by_type["pulumi:providers:aws"]["inputs"]["region"] == "us-west-2"

    text = project.dstack("plan", "train", check=True).stdout
    assert "offline preview: nothing is created" in text
    assert "train: aws g5.xlarge in us-west-2, 1x A10G, spot\n  $0.3018/h; at most $7.24" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "+ aws:ec2/securityGroup:SecurityGroup" in text and f"from: {ADDRESS}/32" in text
    assert f"  SSH open to {ADDRESS}/32 only (this machine's public address)\n" in text
    assert address_service.asked == 2, "asked once per command"


def test_plan_shows_the_configured_allowed_cidr_without_asking(
    project: Project, address_service: AddressService
) -> None:
    set_up(project, "backends:\n  aws:\n    allowed_cidr: 203.0.113.0/28\n", address_service.url)
    [job] = plan_json(project, "train")["jobs"]
    ssh = next(r for r in job["resources"] if r["type"].endswith("SecurityGroup"))
    assert ssh["inputs"]["from"] == "203.0.113.0/28"
    assert job["ssh_from"]["cidr"] == "203.0.113.0/28"
    text = project.dstack("plan", "train", check=True).stdout
    assert "SSH open to 203.0.113.0/28 only (allowed_cidr in config.yaml)" in text
    assert address_service.asked == 0


@pytest.mark.parametrize("answer", [None, "<html>not an address</html>"])
def test_an_address_that_cannot_be_looked_up_is_said_so_not_made_up(
    project: Project, address_service: AddressService, answer: str | None
) -> None:
    """Nothing answers (None), or something that is not an address: the plan says the range
    is not known now, and shows no stand-in address as if it were the rule."""
    address_service.answer = answer or ""
    url = address_service.url if answer else closed_port_url()
    set_up(project, "backends:\n  aws: {}\n", url)
    done = project.dstack("plan", "train", "--json", check=True)
    [job] = json.loads(done.stdout)["jobs"]
    assert job["ssh_from"]["cidr"] is None
    assert f"Cannot look up this machine's public address at {url}" in job["ssh_from"]["problem"]
    ssh = next(r for r in job["resources"] if r["type"].endswith("SecurityGroup"))
    assert ssh["inputs"]["from"] == "<this machine's public address: not known now>"
    text = project.dstack("plan", "train", check=True).stdout
    words = " ".join(text.split())  # the note is wrapped at 80 columns
    assert "SSH open to: not known now. Cannot look up this machine's public address" in words
    assert "`dstack run` looks again and stops if it still cannot" in words
    assert "allowed_cidr in config.yaml sets the range instead" in words
    assert "192.0.2" not in done.stdout + text, "the preview's stand-in is never shown"
    assert all(len(line) <= 80 for line in text.splitlines())


def test_plan_shows_the_rule_that_run_gives_the_stack(
    project: Project, address_service: AddressService
) -> None:
    """`dstack run` (stand-in `pulumi`, no terminal: reviewed, then nothing created) gives
    the stack the range that `dstack plan` showed, looked up the same way."""
    set_up(project, "backends:\n  aws: {}\n", address_service.url)
    planned = project.dstack("plan", "train", check=True).stdout
    project.extra_env["PATH"] = f"{STANDIN}:{os.environ['PATH']}"
    done = project.dstack("run", "train")
    assert done.returncode == 2 and "there is no terminal to ask on" in done.stderr
    review = done.stderr
    assert f"      from: {ADDRESS}/32\n" in review, "the engine's preview of the stack's config"
    line = f"  SSH open to {ADDRESS}/32 only (this machine's public address)\n"
    assert line in planned and line in review
    assert f"      from: {ADDRESS}/32\n" in planned


def test_a_job_that_fits_here_creates_nothing(project: Project) -> None:
    set_up(project, "backends:\n  aws: {}\n")
    [job] = plan_json(project, "tiny")["jobs"]
    assert job["offer"]["backend"] == "local" and job["offer"]["price"] == 0
    assert job["resources"] == []
    assert "nothing to create" in project.dstack("plan", "tiny", check=True).stdout


def test_gcp_and_azure_offers_preview_their_own_resources(project: Project) -> None:
    set_up(
        project,
        "backends:\n  gcp: {spot: never}\n  azure: {instance_types: [Standard_NC4as_T4_v3]}\n",
    )
    project.workflows(GPU_JOB.replace("A10G", "T4"))
    [job] = plan_json(project, "train", "--backend", "gcp")["jobs"]
    assert (job["offer"]["name"], job["offer"]["spot"]) == ("n1-standard-8", False)
    types = {r["type"] for r in job["resources"]}
    assert {"gcp:compute/firewall:Firewall", "gcp:compute/instance:Instance"} <= types
    [job] = plan_json(project, "train", "--backend", "azure")["jobs"]
    assert job["offer"]["name"] == "Standard_NC4as_T4_v3" and job["offer"]["spot"]
    vm = next(r for r in job["resources"] if r["type"].endswith("VirtualMachine"))
    assert vm["inputs"]["market"] == "Spot" and vm["inputs"]["eviction"] == "Delete"


def test_no_fitting_offer_says_which_host_or_limit_stopped_it(project: Project) -> None:
    set_up(project, "backends:\n  aws:\n    max_price: 0.2\n")
    done = project.dstack("plan", "train")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "No offer fits the job" in done.stderr
    assert "local (" in done.stderr and "1 GPU A10G requested" in done.stderr
    assert "aws: the limit max_price $0.2/h excludes all" in done.stderr
    assert "g5.xlarge in us-east-1, $0.3018/h, spot" in done.stderr


def test_export_writes_a_pulumi_project_the_stacks_program_runs(
    project: Project, tmp_path: Path
) -> None:
    """The exported project runs under the Pulumi SDK's mock runtime with its own stack config,
    as `pulumi up` would run it with the engine: same program, same resources."""
    set_up(project, "backends:\n  aws:\n    regions: [us-east-1]\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaExportedKey me@laptop\n")
    out = tmp_path / "exported"
    done = project.dstack(
        "plan",
        "train",
        "--export",
        str(out),
        "--allowed-cidr",
        "203.0.113.7/32",
        "--ssh-key",
        str(key),
        check=True,
    )
    assert "Wrote" in done.stderr and "pulumi config set" not in done.stderr
    assert "runtime: python" in (out / "Pulumi.yaml").read_text()
    stack_file = out / "Pulumi.dstack-RUN-train.yaml"
    host = json.loads(stack_file.read_text())["config"]["dstack-host:host"]
    assert (host["backend"], host["instance_type"], host["spot"]) == ("aws", "g5.xlarge", True)
    assert host["allowed_cidr"] == "203.0.113.7/32"
    assert host["ssh_public_key"] == "ssh-ed25519 AAAAC3NzaExportedKey me@laptop"
    assert host["shutdown_after_minutes"] == 24 * 60

    script = (
        "import json, runpy, sys\n"
        "import pulumi\n"
        "found = []\n"
        "class M(pulumi.runtime.Mocks):\n"
        "    def new_resource(self, a):\n"
        "        found.append((a.typ, a.inputs))\n"
        "        return a.name + '-id', dict(a.inputs, publicIp='203.0.113.99')\n"
        "    def call(self, a):\n"
        "        return {'id': 'ami-1'}\n"
        "pulumi.runtime.set_mocks(M(), project='dstack-host', stack='s', preview=False)\n"
        "config = json.load(open(sys.argv[1]))['config']\n"
        "pulumi.runtime.set_all_config({k: json.dumps(v) for k, v in config.items()})\n"
        "@pulumi.runtime.test\n"
        "def run():\n"
        "    runpy.run_path(sys.argv[2], run_name='__main__')\n"
        "run()\n"
        "sg = next(i for t, i in found if t.endswith('SecurityGroup'))\n"
        "print(json.dumps({'types': sorted(t for t, _ in found), 'cidr': sg['ingress'][0]['cidrBlocks']}))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, str(stack_file), str(out / "__main__.py")],
        cwd=out,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["cidr"] == ["203.0.113.7/32"]
    assert "aws:ec2/instance:Instance" in result["types"]


def test_export_writes_the_looked_up_address(
    project: Project, tmp_path: Path, address_service: AddressService
) -> None:
    set_up(project, "backends:\n  aws: {}\n", address_service.url)
    done = project.dstack("plan", "train", "--export", str(tmp_path / "x"), check=True)
    assert "host.allowed_cidr" not in done.stderr and "host.ssh_public_key" in done.stderr
    stack = json.loads((tmp_path / "x" / "Pulumi.dstack-RUN-train.yaml").read_text())
    assert stack["config"]["dstack-host:host"]["allowed_cidr"] == f"{ADDRESS}/32"


def test_export_without_the_launch_values_says_what_to_set(
    project: Project, tmp_path: Path
) -> None:
    set_up(project, "backends:\n  aws: {}\n")
    done = project.dstack("plan", "train", "--export", str(tmp_path / "x"), check=True)
    assert "pulumi config set --path host.allowed_cidr VALUE" in done.stderr
    bad = project.dstack("plan", "train", "--export", str(tmp_path / "y"), "--allowed-cidr", "me")
    assert bad.returncode != 0 and "--allowed-cidr" in bad.stderr and "Traceback" not in bad.stderr
    local = project.dstack("plan", "tiny", "--export", str(tmp_path / "z"))
    assert local.returncode != 0 and "Nothing to export" in local.stderr


def test_a_missing_pulumi_sdk_is_a_clear_error(project: Project) -> None:
    set_up(project, "backends:\n  aws: {}\n")
    code = (
        "import runpy, sys\n"
        "sys.modules['pulumi_aws'] = None  # as if the [aws] extra were not installed\n"
        "sys.argv = ['dstack', 'plan', 'train']\n"
        "runpy.run_module('dstack', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "needs the Pulumi SDK for it (pulumi_aws is missing)" in done.stderr
    assert "pip install 'dstack[aws]'" in done.stderr
