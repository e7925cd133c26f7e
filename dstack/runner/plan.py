"""Turn `dstack run WF ARGS` into validated jobs in topological order, refusing bad input early."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dstack.errors import ResourceError, SpecError
from dstack.hostinfo import local_resources, missing_resources
from dstack.providers.base import get_provider
from dstack.spec.loader import Project
from dstack.spec.models import Workflow
from dstack.spec.suggest import did_you_mean
from dstack.spec.variables import split_run_args
from dstack.spec.yamlio import line_of


@dataclass(frozen=True)
class PlannedJob:
    workflow: Workflow
    file: str
    upstream: list[str]


@dataclass
class Plan:
    target: str
    jobs: list[PlannedJob]
    overrides: dict[str, str] = field(default_factory=dict)
    run_args: list[str] = field(default_factory=list)

    def variables(self, project: Project) -> dict[str, dict[str, object]]:
        return {
            j.workflow.name: project.variables.for_workflow(j.workflow.name, self.overrides)
            for j in self.jobs
        }


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
        for index, (up, tag) in enumerate(wf.upstream()):
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
        ordered.append(PlannedJob(wf, raw.file, upstream))
        done.add(name)

    visit(target, [])
    return Plan(target, ordered, overrides, run_args)


def check_plan(plan: Plan, repo: Path, disk_path: Path) -> None:
    """Providers' checks and this machine's resources, before anything is created."""
    wants_gpu = any(j.workflow.resources.gpu and j.workflow.resources.gpu.count for j in plan.jobs)
    host = local_resources(disk_path, with_gpus=wants_gpu)
    for job in plan.jobs:
        wd = job.workflow.working_dir
        if wd and not (repo / wd).is_dir():
            raise SpecError(
                f"{job.file}: workflow '{job.workflow.name}', field 'working_dir': "
                f"folder '{wd}' does not exist in the repository.",
                hint="working_dir is relative to the folder that holds .dstack/",
            )
        provider = get_provider(job.workflow.provider, job.file)
        provider.check(job.workflow, repo, job.file)
        provider.check_host(job.workflow, lambda command: shutil.which(command) is not None)
        short = missing_resources(job.workflow.resources, host)
        if short:
            raise ResourceError(
                f"Workflow '{job.workflow.name}' needs more than this machine has: "
                + "; ".join(short)
                + ".",
                hint="lower 'resources' in the workflow, or run it on a bigger host",
            )
