"""Starting one job on the host it was given: its whole tree written (code snapshot and
inputs, checked as one tree first), its environment, its provider's script, and the record
of what it ran with (for `dstack inspect` and reruns)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dstack import secrets
from dstack.execution.base import Executor, JobHandle
from dstack.home import Home
from dstack.providers.base import HostContext, Provider, get_provider
from dstack.runner.agents import start_agent
from dstack.runner.inputs import Input
from dstack.spec.jobspec import JobSpec
from dstack.state.records import JobRecord, RunRecord
from dstack.storage.manifest import Manifest
from dstack.storage.store import Store
from dstack.storage.tree import final_tree


@dataclass(frozen=True)
class Started:
    handle: JobHandle
    job_dir: str
    ports: list[int]
    url_path: str  # what to append to $PORT_0's URL (a login token): kept out of the state
    record: dict[str, Any]
    note: str | None  # where its log and artifacts go, when the user should know


def start_job(
    home: Home,
    store: Store,
    ex: Executor,
    backend: str,
    run: RunRecord,
    job: JobRecord,
    spec: JobSpec,
    inputs: list[Input],
    manifests: dict[str, Manifest],
) -> Started:
    provider = get_provider(spec.provider)
    provider.check_host(spec, ex.which)
    job_dir = ex.job_dir(run.name, job.workflow)
    snapshot = store.get_manifest(run.snapshot["key"]).entries
    # The job's whole tree is checked before any of it is written (links across inputs).
    tree = final_tree([snapshot, *(manifests[item.manifest].entries for item in inputs)])
    ex.place(job_dir, tree)
    ex.make_dirs(job_dir, [a.path for a in spec.artifacts])
    ports = ex.free_ports(max(spec.ports, provider.ports))
    env = job_env(home, run, job, spec, provider, {e.path: e.sha256 for e in tree}, ports)
    script = provider.script(spec, HostContext(ex.venv_cache()))
    handle = ex.start(job_dir, spec.working_dir or ".", script, env)
    direct, why_not = start_agent(store, ex, run.name, job.workflow, spec, handle, job_dir)
    record = {
        "commit": run.snapshot.get("commit"),
        "branch": run.snapshot.get("branch"),
        "dirty_hash": run.snapshot.get("dirty_hash"),
        "snapshot": run.snapshot["digest"],
        "variables": run.variables,
        "run_args": run.args,
        "provider": spec.provider,
        "backend": backend,
        "host": ex.host_name(),
        "ports": ports,
        "saver": "agent" if direct else "dstack",
        "inputs": [
            {"source": i.source, "manifest": i.manifest, "digest": manifests[i.manifest].digest()}
            for i in inputs
        ],
    }
    note = None
    if direct:
        note = f"{ex.host_name()} saves {job.workflow}'s log and artifacts to {store.url} itself"
    elif why_not:
        note = f"{job.workflow}'s log and artifacts go through this machine: {why_not}"
    return Started(handle, job_dir, ports, provider.url_path(env), record, note)


def job_env(
    home: Home,
    run: RunRecord,
    job: JobRecord,
    spec: JobSpec,
    provider: Provider,
    files: dict[str, str],
    ports: list[int],
) -> dict[str, str]:
    """The workflow's env (a name without a value takes this machine's), dstack's own
    variables, the secrets, the provider's; DSTACK_MASK_VARS names what logs must hide."""
    env = {k: (v if v is not None else os.environ.get(k, "")) for k, v in spec.env.items()}
    env |= {
        "DSTACK_RUN": run.name,
        "DSTACK_WORKFLOW": job.workflow,
        "PYTHONUNBUFFERED": "1",
        **{f"PORT_{i}": str(port) for i, port in enumerate(ports)},
        **secrets.job_env(home),
    }
    env |= provider.job_env(spec, files)
    masked = [*env.get("DSTACK_MASK_VARS", "").split(), *provider.masked]
    env["DSTACK_MASK_VARS"] = " ".join(masked)
    return env
