"""What every host component is: a Pulumi component exposing where to reach the host."""

from __future__ import annotations

from typing import Any

import pulumi


class HostComponent(pulumi.ComponentResource):
    """``address`` (IP or name, with ``:port`` for an own server), ``ssh_user`` and the cloud's
    ``instance_id``: what dstack hands to its SSH executor."""

    address: pulumi.Output[str]
    ssh_user: pulumi.Output[str]
    instance_id: pulumi.Output[str]

    def publish(self, address: Any, ssh_user: Any, instance_id: Any) -> None:
        """Set the three outputs (plain values or Outputs) and register them."""
        self.address = pulumi.Output.from_input(address)
        self.ssh_user = pulumi.Output.from_input(ssh_user)
        self.instance_id = pulumi.Output.from_input(instance_id)
        self.register_outputs(
            {"address": self.address, "ssh_user": self.ssh_user, "instance_id": self.instance_id}
        )
