"""The stack components under the Pulumi SDK's mock runtime: every resource a job's host needs,
with the inputs that matter (who may reach SSH, spot, disk, labels, the shutdown deadline).

The Pulumi engine and the clouds cannot run here; `set_mocks` runs the real component code in
process and records each resource registration with its inputs (camelCase, as the engine sees
them)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from conftest import wait_for

from stacks.spec import IDLE_WATCHDOG, HostSpec, startup_script

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDstackTestKey dstack"
LABELS = {"run": "brave-otter-12", "job": "train", "owner": "Ada@Lab"}


class Recorder(pulumi.runtime.Mocks):
    """Answers every registration with its inputs plus the outputs a cloud would add."""

    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        state = dict(args.inputs)
        if args.typ == "aws:ec2/instance:Instance":
            state["publicIp"] = "203.0.113.10"
        if args.typ == "gcp:compute/instance:Instance":
            state["instanceId"] = "4242"
            state["networkInterfaces"] = [{"accessConfigs": [{"natIp": "203.0.113.20"}]}]
        if args.typ == "azure-native:network:PublicIPAddress":
            state["ipAddress"] = "203.0.113.30"
        if args.typ == "azure-native:compute:VirtualMachine":
            state["vmId"] = "vm-uuid"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0dlbase", "imageId": "ami-0dlbase", "architecture": "x86_64"}
        raise AssertionError(f"unexpected invoke {args.token}")

    def one(self, typ: str) -> dict[str, Any]:
        found = [inputs for t, _, inputs in self.resources if t == typ]
        assert len(found) == 1, f"{typ}: {len(found)} registered"
        return found[0]

    def types(self) -> list[str]:
        """Resource types, sorted (registrations finish in the order their inputs resolve)."""
        return sorted(t for t, _, _ in self.resources)


def build(spec: HostSpec) -> tuple[Recorder, dict[str, Any]]:
    """Run the stack program for the spec under mocks; its recorder and exported outputs."""
    from stacks.program import host

    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="dstack-host", stack="test", preview=False)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[misc]
    def program() -> pulumi.Output[Any]:
        component = host(spec)
        return pulumi.Output.all(
            component.address, component.ssh_user, component.instance_id
        ).apply(lambda v: outputs.update(address=v[0], ssh_user=v[1], instance_id=v[2]))

    program()
    return mocks, outputs


def spec(backend: str, **extra: Any) -> HostSpec:
    base: dict[str, Any] = {
        "backend": backend,
        "name": "dstack-brave-otter-12-train",
        "ssh_public_key": KEY,
        "allowed_cidr": "198.51.100.7/32",
        "labels": LABELS,
        "shutdown_after_minutes": 240,
        "idle_minutes": 20,
        "disk_gb": 150,
    }
    return HostSpec(**{**base, **extra})


def test_aws_host_opens_ssh_to_the_caller_only_and_terminates_itself() -> None:
    mocks, outputs = build(
        spec("aws", instance_type="g5.xlarge", region="us-east-1", spot=True, max_price=0.5)
    )
    assert mocks.types() == [
        "aws:ec2/instance:Instance",
        "aws:ec2/keyPair:KeyPair",
        "aws:ec2/securityGroup:SecurityGroup",
        "dstack:aws:Host",
        "pulumi:providers:aws",
    ]
    assert mocks.one("pulumi:providers:aws")["region"] == "us-east-1"
    assert mocks.one("aws:ec2/keyPair:KeyPair")["publicKey"] == KEY
    group = mocks.one("aws:ec2/securityGroup:SecurityGroup")
    [ingress] = group["ingress"]
    assert (ingress["fromPort"], ingress["toPort"], ingress["protocol"]) == (22, 22, "tcp")
    assert ingress["cidrBlocks"] == ["198.51.100.7/32"], "never 0.0.0.0/0 unless configured"
    vm = mocks.one("aws:ec2/instance:Instance")
    assert vm["instanceType"] == "g5.xlarge" and vm["ami"] == "ami-0dlbase"
    assert vm["rootBlockDevice"] == {
        "volumeSize": 150,
        "volumeType": "gp3",
        "deleteOnTermination": True,
    }
    assert vm["instanceMarketOptions"] == {
        "marketType": "spot",
        "spotOptions": {
            "maxPrice": "0.5",
            "spotInstanceType": "one-time",
            "instanceInterruptionBehavior": "terminate",
        },
    }
    assert vm["instanceInitiatedShutdownBehavior"] == "terminate"
    assert "shutdown -h +240" in vm["userData"]
    assert "nohup /usr/local/bin/dstack-idle-off 1200 60 " in vm["userData"]
    assert vm["tags"]["run"] == "brave-otter-12" and vm["tags"]["owner"] == "ada-lab"
    [(token, lookup)] = mocks.calls
    assert token == "aws:ec2/getAmi:getAmi" and lookup["owners"] == ["amazon"]
    assert "Deep Learning" in lookup["filters"][0]["values"][0]
    assert outputs == {
        "address": "203.0.113.10",
        "ssh_user": "ubuntu",
        "instance_id": "dstack-brave-otter-12-train-vm-id",
    }


def test_aws_on_demand_with_a_given_image_has_no_market_options_and_no_lookup() -> None:
    mocks, _ = build(spec("aws", instance_type="m6i.2xlarge", region="eu-west-1", image="ami-mine"))
    vm = mocks.one("aws:ec2/instance:Instance")
    assert "instanceMarketOptions" not in vm and vm["ami"] == "ami-mine"
    assert mocks.calls == []


def test_gcp_host_attaches_gpus_and_schedules_spot() -> None:
    mocks, outputs = build(
        spec(
            "gcp",
            instance_type="n1-standard-8",
            region="us-central1",
            gpu_name="T4",
            gpu_count=1,
            spot=True,
        )
    )
    assert mocks.types() == [
        "dstack:gcp:Host",
        "gcp:compute/firewall:Firewall",
        "gcp:compute/instance:Instance",
        "pulumi:providers:gcp",
    ]
    rule = mocks.one("gcp:compute/firewall:Firewall")
    assert rule["sourceRanges"] == ["198.51.100.7/32"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    vm = mocks.one("gcp:compute/instance:Instance")
    assert rule["targetTags"] == vm["tags"], "the rule opens SSH to this VM only"
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 1}]
    assert vm["scheduling"]["provisioningModel"] == "SPOT"
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert vm["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert vm["bootDisk"]["initializeParams"]["size"] == 150
    assert vm["metadata"]["ssh-keys"] == f"ubuntu:{KEY}"
    assert "shutdown -h +240" in vm["metadataStartupScript"]
    assert "dstack-idle-off 1200 60 " in vm["metadataStartupScript"]
    assert vm["labels"] == {
        "managed-by": "dstack",
        "run": "brave-otter-12",
        "job": "train",
        "owner": "ada-lab",
    }
    assert outputs["address"] == "203.0.113.20" and outputs["instance_id"] == "4242"


def test_gcp_machine_types_with_built_in_gpus_attach_none() -> None:
    mocks, _ = build(
        spec(
            "gcp", instance_type="a2-highgpu-1g", region="us-central1", gpu_name="A100", gpu_count=1
        )
    )
    vm = mocks.one("gcp:compute/instance:Instance")
    assert not vm.get("guestAccelerators")
    assert vm["scheduling"]["provisioningModel"] == "STANDARD"


def test_azure_host_is_a_group_with_a_guarded_spot_vm() -> None:
    mocks, outputs = build(
        spec(
            "azure",
            instance_type="Standard_NC4as_T4_v3",
            region="eastus",
            spot=True,
            max_price=0.3,
        )
    )
    assert mocks.types() == [
        "azure-native:compute:VirtualMachine",
        "azure-native:network:NetworkInterface",
        "azure-native:network:NetworkSecurityGroup",
        "azure-native:network:PublicIPAddress",
        "azure-native:network:Subnet",
        "azure-native:network:VirtualNetwork",
        "azure-native:resources:ResourceGroup",
        "dstack:azure:Host",
    ]
    [rule] = mocks.one("azure-native:network:NetworkSecurityGroup")["securityRules"]
    assert (rule["sourceAddressPrefix"], rule["destinationPortRange"]) == (
        "198.51.100.7/32",
        "22",
    )
    assert (rule["access"], rule["direction"]) == ("Allow", "Inbound")
    vm = mocks.one("azure-native:compute:VirtualMachine")
    assert (vm["priority"], vm["evictionPolicy"]) == ("Spot", "Delete")
    assert vm["billingProfile"] == {"maxPrice": 0.3}
    assert vm["hardwareProfile"] == {"vmSize": "Standard_NC4as_T4_v3"}
    assert vm["storageProfile"]["osDisk"]["diskSizeGB"] == 150
    assert vm["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    linux = vm["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"][0]["keyData"] == KEY
    script = base64.b64decode(vm["osProfile"]["customData"]).decode()
    assert "shutdown -h +240" in script and "dstack-idle-off 1200 60 " in script
    assert vm["tags"]["run"] == "brave-otter-12"
    assert outputs["address"] == "203.0.113.30" and outputs["instance_id"] == "vm-uuid"


def test_own_server_creates_nothing_but_shows_in_the_stack() -> None:
    mocks, outputs = build(HostSpec(backend="ssh", name="gpu1", address="10.0.0.7", port=2222))
    assert mocks.types() == ["dstack:ssh:Host"]
    assert outputs == {"address": "10.0.0.7:2222", "ssh_user": "ubuntu", "instance_id": "gpu1"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"allowed_cidr": ""}, "allowed_cidr is required for aws"),
        ({"allowed_cidr": "everyone"}, "allowed_cidr 'everyone' is not an address range"),
        ({"instance_type": ""}, "instance_type is required for aws"),
        ({"disk_gb": 4}, "disk_gb must be at least 8"),
        ({"backend": "oci"}, "backend must be one of aws, gcp, azure, ssh"),
    ],
)
def test_bad_host_descriptions_are_refused_before_any_resource(
    change: dict[str, Any], problem: str
) -> None:
    base = spec("aws", instance_type="g5.xlarge", region="us-east-1")
    with pytest.raises(ValueError, match=problem):
        HostSpec(**{**base.__dict__, **change})


def test_every_gcp_gpu_in_the_catalog_can_be_attached_or_comes_built_in() -> None:
    from dstack.backends.cloud.catalog import load_catalog
    from stacks.gcp import ACCELERATORS

    for t in load_catalog().types:
        if t.backend == "gcp" and t.gpu_count and t.name.startswith("n1-"):
            assert t.gpu_name.upper() in ACCELERATORS, t


def test_the_idle_watchdog_powers_off_only_after_the_last_job_ended(tmp_path: Path) -> None:
    """The startup script's watchdog, run for real by bash with a stand-in `shutdown` and a
    `sleep` that counts its rounds (and keeps them short): it leaves a host alone while a
    job's process lives, and powers it off once the job has written its exit code and the
    idle time has passed."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    powered_off, rounds = tmp_path / "powered-off", tmp_path / "rounds"
    (fake_bin / "shutdown").write_text(f'#!/bin/sh\necho "$@" > {powered_off}\n')
    (fake_bin / "sleep").write_text(f"#!/bin/sh\necho >> {rounds}\nexec /bin/sleep 0.05\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    watchdog = tmp_path / "dstack-idle-off"
    watchdog.write_text(IDLE_WATCHDOG)
    job = tmp_path / "home" / "ubuntu" / ".dstack" / "runs" / "r" / "train"
    job.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    (job / "pid").write_text(f"{sleeper.pid}\n")
    pattern = str(tmp_path / "home" / "*" / ".dstack" / "runs" / "*" / "*" / "pid")
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["bash", str(watchdog), "2", "1", pattern], env=env)

    def looked(times: int) -> bool:
        return rounds.exists() and len(rounds.read_text().splitlines()) > times

    try:
        wait_for(lambda: looked(4), what="the watchdog looking 4 times")  # idle after 2
        assert not powered_off.exists(), "a running job keeps the host up"
        (job / "rc").write_text("0\n")
        wait_for(powered_off.exists, what="the watchdog powering off")
        assert powered_off.read_text().strip() == "-h now"
        assert proc.wait(timeout=5) == 0
    finally:
        sleeper.kill()
        proc.kill()


def test_without_idle_minutes_there_is_no_watchdog() -> None:
    script = startup_script(
        spec("aws", instance_type="t3.large", region="us-east-1", idle_minutes=None)
    )
    assert "shutdown -h +240" in script and "dstack-idle-off" not in script
