"""Turn `dstack run WF ARGS` into validated jobs in topological order, refusing bad input early.

Validated plans are cached by the content of the workflow files, the target and the arguments,
so an unchanged project starts its run without parsing YAML or importing pydantic again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack import __version__
from dstack.atomic import write_text_atomic
from dstack.errors import SpecError
from dstack.home import Home
from dstack.providers.base import get_provider
from dstack.spec.files import variables_file, workflow_files
from dstack.spec.jobspec import JobSpec
from dstack.spec.suggest import did_you_mean
from dstack.spec.variables import split_run_args
from dstack.spec.yamlio import line_of
from dstack.state.db import State

if TYPE_CHECKING:
    from dstack.offer import Offer, Scope
    from dstack.spec.loader import Project


@dataclass(frozen=True)
class PlannedJob:
    data: dict[str, Any]
    file: str
    upstream: list[str]

    @property
    def spec(self) -> JobSpec:
        return JobSpec.from_dict(self.data)


@dataclass(frozen=True)
class Plan:
    target: str
    jobs: list[PlannedJob]
    overrides: dict[str, str]
    run_args: list[str]
    variables: dict[str, dict[str, Any]]


def make_plan(project: Project, target: str, tokens: list[str]) -> Plan:
    project.require(target)
    overrides, run_args = split_run_args(tokens, project.variables.declared(project.raw))
    ordered: list[PlannedJob] = []
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in done:
            return
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name) :], name])
            raise SpecError(
                f"depends-on forms a cycle: {cycle}.",
                hint="a workflow cannot depend on itself, directly or through others",
            )
        raw = project.require(name)
        wf = project.workflow(name, overrides, run_args)
        upstream = []
        for index, (up, tag) in enumerate(wf.to_spec().upstream()):
            if up not in project.raw:
                line = line_of(raw.data.get("depends-on") or raw.data.get("depends_on"), index)
                raise SpecError(
                    f"{raw.file}:{line or raw.data.line}: workflow '{name}', field 'depends-on': "
                    f"unknown workflow '{up}'.",
                    hint=did_you_mean(up, project.raw) or "see `dstack workflows`",
                )
            if tag is None:
                visit(up, [*stack, name])
                upstream.append(up)
        ordered.append(PlannedJob(wf.model_dump(mode="json", by_alias=True), raw.file, upstream))
        done.add(name)

    visit(target, [])
    variables = {
        j.data["name"]: project.variables.for_workflow(j.data["name"], overrides) for j in ordered
    }
    return Plan(target, ordered, overrides, run_args, variables)


def plan_key(repo: Path, target: str, tokens: list[str]) -> str:
    """Changes whenever anything that shapes the plan changes: files, target, args, dstack."""
    digest = hashlib.sha256(json.dumps([__version__, target, tokens]).encode())
    for path in [*workflow_files(repo), variables_file(repo)]:
        if path.exists():
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_plan(cache_dir: Path, key: str) -> Plan | None:
    try:
        data = json.loads((cache_dir / f"{key}.json").read_text())
        jobs = [PlannedJob(**job) for job in data.pop("jobs")]
        return Plan(jobs=jobs, **data)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a missing or damaged cache entry is simply rebuilt


def save_plan(cache_dir: Path, key: str, plan: Plan) -> None:
    write_text_atomic(cache_dir / f"{key}.json", json.dumps(asdict(plan)))


def plan_run(cache_dir: Path, repo: Path, target: str, tokens: list[str]) -> Plan:
    """The validated plan, from the cache when the project is unchanged."""
    key = plan_key(repo, target, tokens)
    plan = load_plan(cache_dir, key)
    if plan is None:
        from dstack.spec.loader import Project

        plan = make_plan(Project.load(repo), target, tokens)
        save_plan(cache_dir, key, plan)
    return plan


def check_plan(
    plan: Plan, repo: Path, home: Home, state: State, scope: Scope
) -> dict[str, list[Offer]]:
    """Providers' checks, and each job's placement (or why none fits), before anything is
    created; the placements, by job."""
    from dstack.backends.base import Context
    from dstack.backends.registry import open_all
    from dstack.runner.placement import place_jobs

    backends = open_all(Context(home, state))
    placements = place_jobs([job.spec for job in plan.jobs], backends, scope)
    for job in plan.jobs:
        spec = job.spec
        wd = spec.working_dir
        if wd and not (repo / wd).is_dir():
            raise SpecError(
                f"{job.file}: workflow '{spec.name}', field 'working_dir': "
                f"folder '{wd}' does not exist in the repository.",
                hint="working_dir is relative to the folder that holds .dstack/",
            )
        provider = get_provider(spec.provider, job.file)
        provider.check(spec, repo, job.file)
        offers = placements[spec.name]
        if len(offers) == 1 and backends[offers[0].backend].here:
            provider.check_host(spec, lambda command: shutil.which(command) is not None)
    return placements
