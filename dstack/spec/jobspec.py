"""A validated workflow as plain frozen dataclasses: what runners, providers and executors use.

Validation happens once, in `models` (pydantic); everything after it reads these values, which
load from the stored JSON without importing pydantic (a run's start-up stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArtifactSpec:
    path: str
    mount: bool = False


@dataclass(frozen=True)
class GPUSpec:
    count: int = 1
    name: str | None = None
    memory: int | None = None


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: int | None = None
    memory: int | None = None
    gpu: GPUSpec | None = None
    shm_size: int | None = None
    disk: int | None = None
    interruptible: bool = False
    local: bool = False


@dataclass(frozen=True)
class DepSpec:
    workflow: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class JobSpec:
    name: str
    provider: str = "bash"
    help: str | None = None
    commands: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    script: str | None = None
    args: tuple[str, ...] = ()
    requirements: str | None = None
    python: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    working_dir: str | None = None
    artifacts: tuple[ArtifactSpec, ...] = ()
    deps: tuple[DepSpec, ...] = ()
    depends_on: tuple[str, ...] = ()
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    ports: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """From the JSON the validated model dumps (`Workflow.model_dump(by_alias=True)`)."""
        res = dict(data.get("resources") or {})
        gpu = res.pop("gpu", None)
        return cls(
            name=data["name"],
            provider=data.get("provider", "bash"),
            help=data.get("help"),
            commands=tuple(data.get("commands", ())),
            setup=tuple(data.get("setup", ())),
            script=data.get("script"),
            args=tuple(data.get("args", ())),
            requirements=data.get("requirements"),
            python=data.get("python"),
            env=dict(data.get("env", {})),
            working_dir=data.get("working_dir"),
            artifacts=tuple(ArtifactSpec(**a) for a in data.get("artifacts", ())),
            deps=tuple(DepSpec(**d) for d in data.get("deps", ())),
            depends_on=tuple(data.get("depends-on", ())),
            resources=ResourcesSpec(**res, gpu=GPUSpec(**gpu) if gpu else None),
            ports=data.get("ports", 0),
        )

    def upstream(self) -> list[tuple[str, str | None]]:
        """`depends-on` as (workflow, tag-or-None) pairs."""
        pairs: list[tuple[str, str | None]] = []
        for item in self.depends_on:
            name, _, tag = item.partition(":")
            pairs.append((name, tag or None))
        return pairs
