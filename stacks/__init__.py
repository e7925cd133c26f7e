"""Pulumi components that create one host for one dstack job, one module per cloud.

Every component takes the same provider-neutral ``HostSpec`` (stacks.spec) and exposes the
host's ``address``, ``ssh_user`` and ``instance_id``. dstack builds them in an ephemeral stack
per job; the same components work in any Pulumi program::

    from stacks.aws import AwsHost
    from stacks.spec import HostSpec

    host = AwsHost("trainer", HostSpec(backend="aws", instance_type="g5.xlarge", ...))
    pulumi.export("address", host.address)

This package knows only Pulumi and HostSpec: it never imports dstack's CLI or state.
"""
