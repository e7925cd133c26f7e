"""Pydantic models of a workflow, with canonical field names (aliases are folded by the loader)."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from dstack.spec.jobspec import JobSpec
from dstack.spec.names import NAME_MAX, name_problem, shown
from dstack.spec.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]


class StrictModel(BaseModel):
    """User-written input: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _check_relative(path: str, what: str) -> str:
    """Paths in the repo must stay in the repo: no absolute paths, no '..' escape."""
    if not path or path.startswith(("/", "~")):
        raise ValueError(f"{what} '{path}' must be a path relative to the repository")
    parts: list[str] = []
    for part in PurePosixPath(path).parts:
        if part == "..":
            if not parts:
                raise ValueError(f"{what} '{path}' leaves the repository")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or "."


def _check_name(value: str | None) -> str | None:
    problem = None if value is None else name_problem(value)
    if problem:
        raise ValueError(f"{shown(value)} {problem}")
    return value


def _check_upstream(value: str) -> str:
    """`X` or `X:TAG`: a workflow name, and a tag name when given."""
    name, sep, tag = value.partition(":")
    _check_name(name)
    if sep:
        _check_name(tag)
    return value


class Artifact(StrictModel):
    path: str = Field(description="Directory or file, relative to the repository root")
    mount: bool = Field(False, description="Save in real time while the job runs")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _check_relative(value, "artifact path")


class GPU(StrictModel):
    count: int = Field(1, ge=0)
    name: str | None = Field(None, description="e.g. A100, T4 (case-insensitive prefix match)")
    memory: Size | None = Field(None, description="Minimum memory per GPU, e.g. 16GB")

    @model_validator(mode="before")
    @classmethod
    def _from_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        if isinstance(value, str) and value.isdigit():
            return {"count": int(value)}
        return value


class Resources(StrictModel):
    cpu: int | None = Field(None, ge=1, description="Minimum number of CPUs")
    memory: Size | None = Field(None, description="Minimum memory, e.g. 16GB")
    gpu: GPU | None = None
    shm_size: Size | None = Field(None, description="Shared memory size, e.g. 8GB")
    disk: Size | None = Field(None, description="Minimum free disk, e.g. 100GB")
    interruptible: bool = Field(False, description="Spot/preemptible instances are acceptable")
    local: bool = Field(False, description="Run on this machine")


class Dep(StrictModel):
    """An input from an earlier run; never re-runs anything."""

    workflow: str | None = None
    tag: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if ":" in value:
                _, tag = value.split(":", 1)
                return {"tag": tag}
            return {"workflow": value}
        return value

    @field_validator("workflow", "tag")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        return _check_name(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> Dep:
        if (self.workflow is None) == (self.tag is None):
            raise ValueError("a dep names exactly one of 'workflow' or 'tag'")
        return self


def _as_list(value: Any) -> Any:
    """A single string becomes a one-element list (one multi-line script stays whole)."""
    return [value] if isinstance(value, str) else value


def _number_as_text(value: Any) -> Any:
    """A number written where text is meant (`args: 10`, `${{ epochs }}` of `epochs: 10`)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _as_args(value: Any) -> Any:
    """`args` may be a string (split like a shell does), a list, or a single number."""
    value = _number_as_text(value)
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [_number_as_text(v) for v in value]
    return value


def _as_env(value: Any) -> Any:
    """`env` is a list of K=V (or bare K, taken from the caller) or a mapping."""
    if isinstance(value, list):
        env: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"env entries are 'NAME=value' strings, got {item!r}")
            key, sep, val = item.partition("=")
            env[key] = val if sep else None
        return env
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{shown(key)} cannot be set: names of variables are text")
            if isinstance(item, (list, dict)):
                raise ValueError(f"the value of '{key}' is a list or mapping; give text")
        return {
            k: (None if v is None else str(v) if not isinstance(v, bool) else str(v).lower())
            for k, v in value.items()
        }
    return value


def _check_env_names(env: dict[str, str | None]) -> dict[str, str | None]:
    """A job's variables may not replace what its shell needs (PATH, HOME, ...) nor what dstack
    sets for it (DSTACK_*, PORT_N): the job would die without a word, or silently get dstack's
    value. The same rule as for secrets, but for PYTHONUNBUFFERED, which 2022 files set to the
    value dstack gives it anyway."""
    from dstack.secrets import secret_name_problem

    for key in env:
        problem = None if key == "PYTHONUNBUFFERED" else secret_name_problem(key)
        if problem:
            raise ValueError(f"{shown(key)} cannot be set: {problem}")
    return env


def _as_python_version(value: Any) -> Any:
    if isinstance(value, float):
        text = repr(value)
        if text in {"3.1", "3.2"}:
            raise ValueError(f"{value} reads as a number; quote the version, e.g. '3.10'")
        return text
    return str(value) if isinstance(value, int) else value


class Workflow(StrictModel):
    """One workflow of `.dstack/workflows.yaml`, after variables are substituted."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=NAME_MAX)
    help: str | None = Field(None, description="One line shown by `dstack workflows`")
    provider: str = Field("bash", description="bash, python, or a plug-in provider")
    commands: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    setup: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=list, description="Commands run before `commands` (alias before_run)"
    )
    script: str | None = Field(None, description="python: the script (aliases file, python_script)")
    args: Annotated[list[str], BeforeValidator(_as_args)] = Field(default_factory=list)
    requirements: str | None = Field(
        None, description="A requirements file for the python provider"
    )
    python: Annotated[str | None, BeforeValidator(_as_python_version)] = Field(
        None, description="Python version (alias version), e.g. '3.11'"
    )
    env: Annotated[
        dict[str, str | None], BeforeValidator(_as_env), AfterValidator(_check_env_names)
    ] = Field(default_factory=dict, description="List of NAME=value (or bare NAME) or a mapping")
    working_dir: str | None = Field(None, description="Directory inside the repo to run in")
    artifacts: list[Artifact] = Field(default_factory=list)
    deps: list[Dep] = Field(default_factory=list)
    depends_on: Annotated[
        list[Annotated[str, AfterValidator(_check_upstream)]], BeforeValidator(_as_list)
    ] = Field(
        default_factory=list,
        alias="depends-on",
        description="Workflows to run first in the same run; X:TAG uses the tagged run instead",
    )
    resources: Resources = Field(default_factory=lambda: Resources())
    ports: int = Field(0, ge=0, le=64, description="Number of ports; $PORT_0... are set")

    @field_validator("working_dir")
    @classmethod
    def _working_dir_relative(cls, value: str | None) -> str | None:
        return None if value is None else _check_relative(value, "working_dir")

    @field_validator("script", "requirements")
    @classmethod
    def _file_relative(cls, value: str | None) -> str | None:
        return None if value is None else _check_relative(value, "file")

    def to_spec(self) -> JobSpec:
        return JobSpec.from_dict(self.model_dump(mode="json", by_alias=True))


ALIASES: dict[str, str] = {
    "before_run": "setup",
    "file": "script",
    "python_script": "script",
    "version": "python",
    "environment": "env",
    "depends_on": "depends-on",
}
RESOURCE_ALIASES: dict[str, str] = {"spot": "interruptible"}
