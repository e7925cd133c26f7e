"""`DSTACK_HOME/config.yaml`, validated like the workflow files (unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dstack.spec.names import name_problem, shown

STORE_SCHEMES = ("file", "s3", "gs", "az")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalBackend(_Strict):
    enabled: bool = Field(True, description="Run jobs on this machine")


class SSHHost(_Strict):
    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    slots: int = Field(1, ge=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(f"the host name {shown(value)} {problem}")
        return value


class SSHBackend(_Strict):
    hosts: list[SSHHost] = Field(
        default_factory=list, description="Own servers, as `pool add` adds them"
    )
    keep_run_dirs: bool = Field(
        False, description="Keep each job's folder on the host after it ends"
    )


class CloudBackend(_Strict):
    """A cloud where dstack may create a VM per job; a cloud not listed is never used."""

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


class Backends(_Strict):
    local: LocalBackend = Field(default_factory=LocalBackend)
    ssh: SSHBackend = Field(default_factory=SSHBackend)
    aws: CloudBackend | None = None
    gcp: CloudBackend | None = None
    azure: CloudBackend | None = None

    @field_validator("aws", "gcp", "azure")
    @classmethod
    def _in_catalog(cls, value: CloudBackend | None, info: ValidationInfo) -> CloudBackend | None:
        """Regions and instance types must be ones the catalog knows (a typo would otherwise
        silently allow nothing)."""
        from dstack.backends.catalog import load_catalog
        from dstack.spec.suggest import did_you_mean

        if value is None:
            return None
        catalog, cloud = load_catalog(), str(info.field_name)
        for key, known in (
            ("regions", catalog.regions(cloud)),
            ("instance_types", catalog.names(cloud)),
        ):
            for item in getattr(value, key) or []:
                if item not in known:
                    hint = did_you_mean(item, known) or f"see `dstack offers --backend {cloud}`"
                    raise ValueError(
                        f"{key}: '{item}' is not a {cloud} entry of the catalog ({hint})"
                    )
        return value


class StoreSettings(_Strict):
    """Where blobs, manifests, run records and tags live; absent: a folder in DSTACK_HOME."""

    url: str | None = Field(None, description="file:///path, s3://b/prefix, gs://b/p, az://c/p")
    endpoint_url: str | None = Field(None, description="S3-compatible server, e.g. MinIO")
    region: str | None = Field(None, description="S3 bucket region")
    profile: str | None = Field(None, description="AWS profile for s3://")
    project: str | None = Field(None, description="Google Cloud project for gs://")
    account: str | None = Field(None, description="Azure storage account for az://")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in STORE_SCHEMES or not rest.strip("/"):
            raise ValueError(
                f"'{url}' is not a store URL (file:///path, s3://bucket/prefix, "
                "gs://bucket/prefix or az://container/prefix)"
            )
        if scheme == "file" and not rest.startswith("/"):
            import os

            raise ValueError(
                f"'{url}' names a relative path, which would depend on the folder dstack is "
                f"started in; give an absolute one, e.g. file://{os.path.abspath(rest)}"
            )
        return url


class PulumiSettings(_Strict):
    backend_url: str | None = Field(
        None, description="Where stack state lives (default: file:// in DSTACK_HOME/pulumi)"
    )


class Config(_Strict):
    backends: Backends = Field(default_factory=Backends)
    store: StoreSettings = Field(default_factory=StoreSettings)
    pulumi: PulumiSettings = Field(default_factory=PulumiSettings)
