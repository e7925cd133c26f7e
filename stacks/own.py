"""An own server: a host that exists already. It creates nothing; it is a component so that
a preview of the job's stack shows where the job goes, the same way as for a cloud VM."""

from __future__ import annotations

import pulumi

from stacks.host import HostComponent
from stacks.spec import HostSpec


class OwnHost(HostComponent):
    def __init__(
        self, name: str, spec: HostSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dstack:ssh:Host", name, None, opts)
        self.publish(f"{spec.address}:{spec.port}", spec.ssh_user, spec.name)
