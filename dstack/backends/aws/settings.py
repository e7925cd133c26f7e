"""`backends.aws` in config.yaml."""

from __future__ import annotations

from typing import ClassVar

from dstack.backends.cloud.settings import CloudSettings


class AwsSettings(CloudSettings):
    cloud: ClassVar[str] = "aws"
