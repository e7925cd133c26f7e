"""Azure: a resource group holding the network, subnet, public IP, a network security group
(SSH from the allowed range only), the NIC and the VM (Spot priority, evicted VMs deleted).
Deleting the stack deletes the group and everything in it."""

from __future__ import annotations

import base64

import pulumi
from pulumi_azure_native import compute, network, resources

from stacks.host import HostComponent
from stacks.spec import HostSpec, cloud_labels, startup_script

# Ubuntu HPC image with NVIDIA drivers (publisher:offer:sku:version); `image` overrides it.
DEFAULT_IMAGE = "microsoft-dsvm:ubuntu-hpc:2204:latest"


class AzureHost(HostComponent):
    def __init__(
        self, name: str, spec: HostSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dstack:azure:Host", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = cloud_labels(spec)
        group = resources.ResourceGroup(f"{name}-rg", location=spec.region, tags=tags, opts=child)
        net = network.VirtualNetwork(
            f"{name}-net",
            address_space=network.AddressSpaceArgs(address_prefixes=["10.0.0.0/16"]),
            tags=tags,
            opts=child,
            resource_group_name=group.name,
            location=spec.region,
        )
        subnet = network.Subnet(
            f"{name}-subnet",
            resource_group_name=group.name,
            virtual_network_name=net.name,
            address_prefix="10.0.1.0/24",
            opts=child,
        )
        public_ip = network.PublicIPAddress(
            f"{name}-ip",
            public_ip_allocation_method="Static",
            sku=network.PublicIPAddressSkuArgs(name="Standard"),
            tags=tags,
            opts=child,
            resource_group_name=group.name,
            location=spec.region,
        )
        guard = network.NetworkSecurityGroup(
            f"{name}-nsg",
            security_rules=[
                network.SecurityRuleArgs(
                    name="ssh-from-caller",
                    priority=100,
                    direction="Inbound",
                    access="Allow",
                    protocol="Tcp",
                    source_address_prefix=spec.allowed_cidr,
                    source_port_range="*",
                    destination_address_prefix="*",
                    destination_port_range="22",
                )
            ],
            tags=tags,
            opts=child,
            resource_group_name=group.name,
            location=spec.region,
        )
        nic = network.NetworkInterface(
            f"{name}-nic",
            network_security_group=network.NetworkSecurityGroupArgs(id=guard.id),
            ip_configurations=[
                network.NetworkInterfaceIPConfigurationArgs(
                    name="primary",
                    subnet=network.SubnetArgs(id=subnet.id),
                    public_ip_address=network.PublicIPAddressArgs(id=public_ip.id),
                )
            ],
            tags=tags,
            opts=child,
            resource_group_name=group.name,
            location=spec.region,
        )
        publisher, offer, sku, version = (spec.image or DEFAULT_IMAGE).split(":")
        vm = compute.VirtualMachine(
            f"{name}-vm",
            hardware_profile=compute.HardwareProfileArgs(vm_size=spec.instance_type),
            priority="Spot" if spec.spot else "Regular",
            eviction_policy="Delete" if spec.spot else None,
            billing_profile=(
                compute.BillingProfileArgs(max_price=spec.max_price or -1) if spec.spot else None
            ),
            os_profile=compute.OSProfileArgs(
                computer_name=name[:64],
                admin_username=spec.ssh_user,
                custom_data=base64.b64encode(startup_script(spec).encode()).decode(),
                linux_configuration=compute.LinuxConfigurationArgs(
                    disable_password_authentication=True,
                    ssh=compute.SshConfigurationArgs(
                        public_keys=[
                            compute.SshPublicKeyArgs(
                                key_data=spec.ssh_public_key,
                                path=f"/home/{spec.ssh_user}/.ssh/authorized_keys",
                            )
                        ]
                    ),
                ),
            ),
            storage_profile=compute.StorageProfileArgs(
                image_reference=compute.ImageReferenceArgs(
                    publisher=publisher, offer=offer, sku=sku, version=version
                ),
                os_disk=compute.OSDiskArgs(
                    create_option="FromImage", disk_size_gb=spec.disk_gb, delete_option="Delete"
                ),
            ),
            network_profile=compute.NetworkProfileArgs(
                network_interfaces=[
                    compute.NetworkInterfaceReferenceArgs(
                        id=nic.id, primary=True, delete_option="Delete"
                    )
                ]
            ),
            tags=tags,
            opts=child,
            resource_group_name=group.name,
            location=spec.region,
        )
        self.publish(public_ip.ip_address.apply(lambda ip: ip or ""), spec.ssh_user, vm.vm_id)
