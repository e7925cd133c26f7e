"""The stack program: one host from a HostSpec, its outputs exported. Used by dstack (inline,
through the Automation API) and by stacks/__main__.py (standalone `pulumi up`)."""

from __future__ import annotations

import importlib

import pulumi

from stacks.spec import HostSpec

COMPONENTS = {
    "aws": ("stacks.aws", "AwsHost"),
    "gcp": ("stacks.gcp", "GcpHost"),
    "azure": ("stacks.azure", "AzureHost"),
    "ssh": ("stacks.own", "OwnHost"),
}


# The Pulumi SDK package each backend's component needs (an extra of dstack).
SDKS = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure": "pulumi_azure_native", "ssh": "pulumi"}


def host(spec: HostSpec) -> pulumi.ComponentResource:
    """Create the spec's host and export ``address``, ``ssh_user`` and ``instance_id``."""
    module, cls = COMPONENTS[spec.backend]
    component = getattr(importlib.import_module(module), cls)(spec.name, spec)
    for output in ("address", "ssh_user", "instance_id"):
        pulumi.export(output, getattr(component, output))
    return component  # type: ignore[no-any-return]
