"""AWS: a VM per job through Pulumi, as every cloud (dstack.backends.cloud)."""

from __future__ import annotations

from dstack.backends.cloud.backend import CloudBackend


class AwsBackend(CloudBackend):
    name = "aws"
    plugin = ("aws", "pulumi_aws")
    settings_model = "dstack.backends.aws.settings:AwsSettings"
