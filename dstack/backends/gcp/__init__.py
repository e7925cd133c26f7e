"""Google Cloud: a VM per job through Pulumi, as every cloud (dstack.backends.cloud)."""

from __future__ import annotations

from dstack.backends.cloud.backend import CloudBackend


class GcpBackend(CloudBackend):
    name = "gcp"
    plugin = ("gcp", "pulumi_gcp")
    settings_model = "dstack.backends.gcp.settings:GcpSettings"
