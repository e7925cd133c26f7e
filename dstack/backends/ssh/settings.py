"""`backends.ssh` in config.yaml: own servers, and what happens to job folders on them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dstack.spec.names import name_problem, shown


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SSHSettings(_Strict):
    hosts: list[SSHHost] = Field(
        default_factory=list, description="Own servers, as `pool add` adds them"
    )
    keep_run_dirs: bool = Field(
        False, description="Keep each job's folder on the host after it ends"
    )
