"""The one resolver of a job's inputs: upstream jobs of the run, `deps`, and `depends-on: X:TAG`."""

from __future__ import annotations

from dataclasses import dataclass

from dstack.errors import NotFoundError
from dstack.spec.jobspec import JobSpec
from dstack.state.db import State
from dstack.state.records import JobRecord
from dstack.tags import TagBook


@dataclass(frozen=True)
class Input:
    source: str
    manifest: str


def external_inputs(state: State, tags: TagBook, wf: JobSpec) -> list[Input]:
    """Inputs from earlier runs (tags: this home's or a teammate's); a missing one says how to
    produce it."""
    found: list[Input] = []
    for dep in wf.deps:
        if dep.tag is not None:
            tag = tags.get(dep.tag)
            found += [
                Input(f"tag {tag.tag} ({w})", key) for w, key in sorted(tag.manifests.items())
            ]
        elif dep.workflow is not None:
            job = state.last_successful_job(dep.workflow)
            if job is None or job.manifest is None:
                raise NotFoundError(
                    f"Workflow '{wf.name}' uses deps '{dep.workflow}', but '{dep.workflow}' has "
                    "no successful run yet.",
                    hint=f"run it first: dstack run {dep.workflow}",
                )
            found.append(Input(f"{dep.workflow} (run {job.run_name})", job.manifest))
    for upstream, tag_name in wf.upstream():
        if tag_name is None:
            continue
        tag = tags.get(tag_name)
        if upstream not in tag.manifests:
            raise NotFoundError(
                f"Workflow '{wf.name}' depends on '{upstream}:{tag_name}', but the run tagged "
                f"'{tag_name}' has no job '{upstream}' (it has: {', '.join(sorted(tag.manifests))}).",
                hint=f"tag a run of {upstream}: dstack tags add {tag_name} -r RUN",
            )
        found.append(Input(f"{upstream} (tag {tag_name})", tag.manifests[upstream]))
    return found


def upstream_inputs(jobs: dict[str, JobRecord], upstream: list[str]) -> list[Input]:
    return [
        Input(f"{name} (this run)", manifest)
        for name in upstream
        if (manifest := jobs[name].manifest) is not None
    ]
