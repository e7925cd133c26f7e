"""Finding a run's or a tag's artifacts, and putting local files into the store as a tagged set."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from dstack.errors import NotFoundError, SpecError
from dstack.state.db import State
from dstack.state.records import NewJob
from dstack.storage.manifest import Manifest, StatCache, scan_files
from dstack.storage.objects import Meter
from dstack.storage.store import Store, artifact_key

UPLOAD = "upload"


def manifests_of(state: State, store: Store, ref: str) -> dict[str, str]:
    """`RUN` or `:TAG` -> {workflow: manifest key}; runs and tags of teammates included."""
    from dstack.sharing import find_run, open_tags

    if ref.startswith(":"):
        return open_tags(state, store).get(ref[1:]).manifests
    return find_run(state, store, ref).manifests


def load_all(state: State, store: Store, ref: str) -> dict[str, Manifest]:
    found = {wf: store.get_manifest(key) for wf, key in manifests_of(state, store, ref).items()}
    if not found:
        raise NotFoundError(
            f"{ref} has no artifacts.", hint="declare 'artifacts:' in the workflow to save files"
        )
    return found


def upload_tagged(
    state: State,
    store: Store,
    tag: str,
    base: Path,
    paths: list[Path],
    move: bool = False,
    cache: StatCache | None = None,
    progress: Meter | None = None,
) -> str:
    """Store local files as a finished pseudo-run tagged ``tag``; returns the run name.

    The manifest is written after every blob is in the store, the tag after the manifest."""
    from dstack.sharing import claim_run, open_tags, publish_run, tag_run

    if not move:
        open_tags(state, store).check_free(tag)
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
    entries = scan_files(base, rel_paths, store.blobs, cache, progress=progress)
    spec = {"name": UPLOAD, "artifacts": [{"path": p} for p in rel_paths]}
    run = state.create_run(
        workflow=UPLOAD,
        repo_dir=str(base),
        args=[],
        variables={},
        tag=tag,
        snapshot={},
        jobs=[NewJob(UPLOAD, spec)],
        claim=partial(claim_run, state, store),
    )
    key = artifact_key(run, UPLOAD)
    store.put_manifest(key, Manifest(entries, "complete", rel_paths))
    now = time.time()
    state.update_job(
        run, UPLOAD, status="done", exit_code=0, started_at=now, finished_at=now, manifest=key
    )
    state.finish_run(run, "done", 0)
    publish_run(state, store, run)
    tag_run(state, store, tag, run, move)
    return run
