"""`DSTACK_HOME/config.yaml`, validated like the workflow files (unknown keys are errors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


class Config(_Strict):
    backends: Backends = Field(default_factory=Backends)
