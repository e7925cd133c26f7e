"""`DSTACK_HOME/config.yaml`, validated like the workflow files (unknown keys are errors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class SSHBackend(_Strict):
    hosts: list[SSHHost] = Field(
        default_factory=list, description="Own servers, as `pool add` adds them"
    )
    keep_run_dirs: bool = Field(
        False, description="Keep each job's folder on the host after it ends"
    )


class Backends(_Strict):
    local: LocalBackend = Field(default_factory=LocalBackend)
    ssh: SSHBackend = Field(default_factory=SSHBackend)


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
        return url


class Config(_Strict):
    backends: Backends = Field(default_factory=Backends)
    store: StoreSettings = Field(default_factory=StoreSettings)
