"""Azure: a VM per job through Pulumi, as every cloud (dstack.backends.cloud)."""

from __future__ import annotations

from dstack.backends.cloud.backend import CloudBackend


class AzureBackend(CloudBackend):
    name = "azure"
    plugin = ("azure-native", "pulumi_azure_native")
    settings_model = "dstack.backends.azure.settings:AzureSettings"
