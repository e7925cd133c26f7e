"""Finding a run's or a tag's artifacts, and putting local files into the store as a tagged set."""

from __future__ import annotations

import time
from pathlib import Path

from dstack.errors import NotFoundError, RunStateError, SpecError
from dstack.state.db import State
from dstack.storage.manifest import Manifest, scan_files
from dstack.storage.store import Store, artifact_key

UPLOAD = "upload"


def manifests_of(state: State, ref: str) -> dict[str, str]:
    """`RUN` or `:TAG` -> {workflow: manifest key}."""
    if ref.startswith(":"):
        return state.tag(ref[1:]).manifests
    state.run(ref)
    return {j.workflow: j.manifest for j in state.jobs(ref) if j.manifest}


def load_all(state: State, store: Store, ref: str) -> dict[str, Manifest]:
    found = {wf: store.get_manifest(key) for wf, key in manifests_of(state, ref).items()}
    if not found:
        raise NotFoundError(
            f"{ref} has no artifacts.", hint="declare 'artifacts:' in the workflow to save files"
        )
    return found


def upload_tagged(state: State, store: Store, tag: str, base: Path, paths: list[Path]) -> str:
    """Store local files as a finished pseudo-run tagged ``tag``; returns the run name."""
    from dstack.tags import tag_run

    if tag in {t.name for t in state.tags()}:
        raise RunStateError(
            f"Tag '{tag}' already exists.", hint=f"delete it first: dstack tags delete {tag}"
        )
    rel_paths = []
    for path in paths:
        resolved = path.resolve()
        if not resolved.exists():
            raise NotFoundError(f"'{path}' does not exist.")
        if not resolved.is_relative_to(base):
            raise SpecError(
                f"'{path}' is outside {base}.",
                hint="tag files inside the project (paths are stored relative to it)",
            )
        rel_paths.append(resolved.relative_to(base).as_posix() or ".")
    spec = {"name": UPLOAD, "artifacts": [{"path": p} for p in rel_paths]}
    run = state.create_run(UPLOAD, str(base), [], {}, tag, {}, [(UPLOAD, spec, [])])
    entries = scan_files(base, rel_paths, store.blobs)
    key = artifact_key(run, UPLOAD)
    store.put_manifest(key, Manifest(entries, "complete", rel_paths))
    now = time.time()
    state.update_job(
        run, UPLOAD, status="done", exit_code=0, started_at=now, finished_at=now, manifest=key
    )
    state.finish_run(run, "done", 0)
    tag_run(state, tag, run)
    return run
