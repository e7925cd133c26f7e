"""An own server: a host that exists already. It creates nothing; it is a component so that
a preview of the job's stack shows where the job goes, the same way as for a cloud VM."""

from __future__ import annotations

import pulumi

from stacks.spec import HostSpec


class OwnHost(pulumi.ComponentResource):
    address: pulumi.Output[str]
    ssh_user: pulumi.Output[str]
    instance_id: pulumi.Output[str]

    def __init__(
        self, name: str, spec: HostSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dstack:ssh:Host", name, None, opts)
        self.address = pulumi.Output.from_input(f"{spec.address}:{spec.port}")
        self.ssh_user = pulumi.Output.from_input(spec.ssh_user)
        self.instance_id = pulumi.Output.from_input(spec.name)
        self.register_outputs(
            {"address": self.address, "ssh_user": self.ssh_user, "instance_id": self.instance_id}
        )
