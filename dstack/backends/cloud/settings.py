"""`backends.aws|gcp|azure` in config.yaml: a cloud where dstack may create a VM per job."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CloudSettings(BaseModel):
    """A cloud not listed in config.yaml is never used."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cloud: ClassVar[str] = ""  # each cloud's subclass names itself (its catalog entries)

    regions: list[str] | None = Field(None, description="Allowed regions (default: all)")
    instance_types: list[str] | None = Field(
        None, description="Allowed instance types (default: all in the catalog)"
    )
    spot: Literal["never", "auto", "only"] = Field(
        "auto",
        description="never: on-demand only; auto: spot for interruptible jobs; only: spot only",
    )
    max_instances: int = Field(4, ge=1, description="VMs at once, across all dstack processes")
    max_price: float | None = Field(None, gt=0, description="Highest price per hour, USD")
    allowed_cidr: str | None = Field(
        None, description="Who may reach the VMs' SSH (default: this machine's public address/32)"
    )
    boot_timeout: int = Field(
        600, ge=1, description="Seconds a new VM may take to answer SSH before it is torn down"
    )

    @field_validator("allowed_cidr")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        import ipaddress

        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"'{value}' is not an address range (e.g. 203.0.113.7/32)"
                ) from None
        return value

    def problem(self) -> str | None:
        """Regions and instance types must be ones the catalog knows (a typo would otherwise
        silently allow nothing)."""
        from dstack.backends.cloud.catalog import load_catalog
        from dstack.spec.suggest import did_you_mean

        catalog = load_catalog()
        for key, known in (
            ("regions", catalog.regions(self.cloud)),
            ("instance_types", catalog.names(self.cloud)),
        ):
            for item in getattr(self, key) or []:
                if item not in known:
                    hint = (
                        did_you_mean(item, known) or f"see `dstack offers --backend {self.cloud}`"
                    )
                    return f"{key}: '{item}' is not a {self.cloud} entry of the catalog ({hint})"
        return None
