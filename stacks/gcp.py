"""GCP: a firewall rule (SSH from the allowed range only, to this VM's tag), a Compute Engine
VM with its GPUs, SPOT scheduling, TERMINATE on host maintenance, a boot disk, the SSH key in
metadata and the startup script."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_gcp as gcp

from stacks.host import HostComponent
from stacks.spec import HostSpec, cloud_labels, startup_script

# Deep Learning VM with the NVIDIA driver installed on first boot; `image` overrides it.
DEFAULT_IMAGE = "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11"
# GPUs attached to N1 machine types by name; A2, A3 and G2 types come with theirs.
ACCELERATORS = {
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "P100": "nvidia-tesla-p100",
    "P4": "nvidia-tesla-p4",
}


class GcpHost(HostComponent):
    def __init__(
        self, name: str, spec: HostSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dstack:gcp:Host", name, None, opts)
        zone = spec.zone or f"{spec.region}-a"
        provider = gcp.Provider(
            f"{name}-gcp", region=spec.region, zone=zone, opts=pulumi.ResourceOptions(parent=self)
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = cloud_labels(spec)
        network_tag = _tag(name)
        gcp.compute.Firewall(
            f"{name}-ssh",
            network="default",
            description=f"dstack {name}: SSH from {spec.allowed_cidr} only",
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=["22"])],
            source_ranges=[spec.allowed_cidr],
            target_tags=[network_tag],
            opts=child,
        )
        attached = []
        if spec.gpu_count and spec.instance_type.startswith("n1-"):
            accelerator = ACCELERATORS.get((spec.gpu_name or "").upper())
            if accelerator is None:
                raise ValueError(f"no GCP accelerator type for GPU '{spec.gpu_name}'")
            attached = [
                gcp.compute.InstanceGuestAcceleratorArgs(type=accelerator, count=spec.gpu_count)
            ]
        scheduling = gcp.compute.InstanceSchedulingArgs(
            provisioning_model="SPOT" if spec.spot else "STANDARD",
            preemptible=spec.spot,
            automatic_restart=not spec.spot,
            on_host_maintenance="TERMINATE",
            instance_termination_action="DELETE" if spec.spot else None,
        )
        instance = gcp.compute.Instance(
            f"{name}-vm",
            machine_type=spec.instance_type,
            zone=zone,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=spec.image or DEFAULT_IMAGE, size=spec.disk_gb, type="pd-balanced"
                ),
            ),
            guest_accelerators=attached,
            scheduling=scheduling,
            metadata={
                "ssh-keys": f"{spec.ssh_user}:{spec.ssh_public_key}",
                "install-nvidia-driver": "True",
            },
            metadata_startup_script=startup_script(spec),
            network_interfaces=[
                gcp.compute.InstanceNetworkInterfaceArgs(
                    network="default",
                    access_configs=[gcp.compute.InstanceNetworkInterfaceAccessConfigArgs()],
                )
            ],
            labels=labels,
            tags=[network_tag],
            opts=child,
        )
        self.publish(
            instance.network_interfaces.apply(_public_ip), spec.ssh_user, instance.instance_id
        )


def _tag(name: str) -> str:
    """Network tags: lowercase letters, digits and '-', starting with a letter, ≤ 63."""
    clean = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return ("d-" + clean if not clean[:1].isalpha() else clean)[:63]


def _public_ip(nics: Sequence[gcp.compute.outputs.InstanceNetworkInterface]) -> str:
    configs = nics[0].access_configs or []
    return (configs[0].nat_ip or "") if configs else ""
