"""AWS: key pair, security group (SSH from the allowed range only), an EC2 instance on a gp3
root disk, spot through instance market options, a Deep Learning AMI found by lookup."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from stacks.host import HostComponent
from stacks.spec import HostSpec, cloud_labels, startup_script

# Ubuntu with NVIDIA drivers, CUDA and Docker, kept current by AWS; `image` overrides it.
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"


class AwsHost(HostComponent):
    def __init__(
        self, name: str, spec: HostSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dstack:aws:Host", name, None, opts)
        provider = aws.Provider(f"{name}-aws", region=spec.region, opts=self._child())
        child = self._child(provider)
        tags = {**cloud_labels(spec), "Name": name}
        key = aws.ec2.KeyPair(
            f"{name}-key", key_name=name, public_key=spec.ssh_public_key, tags=tags, opts=child
        )
        group = aws.ec2.SecurityGroup(
            f"{name}-ssh",
            description=f"dstack {name}: SSH from {spec.allowed_cidr} only",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=22, to_port=22, cidr_blocks=[spec.allowed_cidr]
                )
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"]
                )
            ],
            tags=tags,
            opts=child,
        )
        image = (
            spec.image
            or aws.ec2.get_ami_output(
                most_recent=True,
                owners=["amazon"],
                filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[DLAMI_NAME])],
                opts=pulumi.InvokeOptions(provider=provider),
            ).id
        )
        market = None
        if spec.spot:
            market = aws.ec2.InstanceInstanceMarketOptionsArgs(
                market_type="spot",
                spot_options=aws.ec2.InstanceInstanceMarketOptionsSpotOptionsArgs(
                    max_price=str(spec.max_price) if spec.max_price else None,
                    spot_instance_type="one-time",
                    instance_interruption_behavior="terminate",
                ),
            )
        instance = aws.ec2.Instance(
            f"{name}-vm",
            instance_type=spec.instance_type,
            ami=image,
            availability_zone=spec.zone,
            key_name=key.key_name,
            vpc_security_group_ids=[group.id],
            associate_public_ip_address=True,
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_size=spec.disk_gb, volume_type="gp3", delete_on_termination=True
            ),
            instance_market_options=market,
            instance_initiated_shutdown_behavior="terminate",
            user_data=startup_script(spec),
            tags=tags,
            volume_tags=tags,
            opts=child,
        )
        self.publish(instance.public_ip, spec.ssh_user, instance.id)

    def _child(self, provider: pulumi.ProviderResource | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=provider)
