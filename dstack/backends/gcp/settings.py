"""`backends.gcp` in config.yaml."""

from __future__ import annotations

from typing import ClassVar

from dstack.backends.cloud.settings import CloudSettings


class GcpSettings(CloudSettings):
    cloud: ClassVar[str] = "gcp"
