"""Run records in the store: what a teammate pointed at the same store sees of this home's runs.

Each home keeps its own runs in SQLite (fast, local) and publishes a small record of each run to
`runs/RUN.json` when it is created and when it ends. Views list the records of runs this home
does not have; records of finished runs are cached, since they never change again.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dstack.atomic import write_text_atomic
from dstack.errors import NotFoundError, RunStateError
from dstack.home import Home
from dstack.state.db import State
from dstack.state.records import FINAL
from dstack.storage.store import Store
from dstack.tags import TagBook, manifests_by_job, who


@dataclass(frozen=True)
class SharedRun:
    """A run as any home sees it: its own from SQLite, a teammate's from the store."""

    name: str
    workflow: str
    status: str
    created_at: float
    finished_at: float | None
    exit_code: int | None
    tag: str | None
    owner: str
    manifests: dict[str, str]

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def local_run(state: State, name: str) -> SharedRun:
    run = state.run(name)
    return SharedRun(
        run.name,
        run.workflow,
        run.status,
        run.created_at,
        run.finished_at,
        run.exit_code,
        run.tag,
        who(),
        manifests_by_job(state.jobs(name)),
    )


def publish_run(state: State, store: Store, name: str) -> None:
    record = local_run(state, name).to_dict()
    record["jobs"] = [
        {"workflow": j.workflow, "status": j.status, "exit_code": j.exit_code}
        for j in state.jobs(name)
    ]
    store.put_run(record)


def _from_record(data: dict[str, Any]) -> SharedRun:
    fields = SharedRun.__dataclass_fields__
    return SharedRun(**{k: v for k, v in data.items() if k in fields})


def shared_runs(home: Home, state: State, store: Store) -> list[SharedRun]:
    """Runs in the store that this home did not start (none in this home's private store)."""
    if not store.shared:
        return []
    mine = state.run_names()
    names = [n for n in store.run_names() if n not in mine]
    if not names:
        return []
    cache_path = home.root / "cache" / "shared-runs.json"
    try:
        cache: dict[str, dict[str, Any]] = json.loads(cache_path.read_text())
    except (FileNotFoundError, ValueError):
        cache = {}
    fetch = [n for n in names if n not in cache]
    if fetch:
        with ThreadPoolExecutor(store.objects.parallelism) as pool:
            for name, data in zip(fetch, pool.map(store.get_run, fetch), strict=True):
                if data is not None:
                    cache[name] = data
        finals = {n: d for n, d in cache.items() if d.get("status") in FINAL and n in names}
        write_text_atomic(cache_path, json.dumps(finals))
    return [_from_record(cache[n]) for n in names if n in cache]


def find_run(state: State, store: Store, name: str) -> SharedRun:
    """A run of this home, else one in the store."""
    if state.has_run(name):
        return local_run(state, name)
    data = store.get_run(name)
    if data is None:
        try:
            state.run(name)
        except NotFoundError as e:  # did-you-mean over this home's runs
            raise NotFoundError(
                f"No run named '{name}' here or in the store {store.url}.", hint=e.hint
            ) from None
    assert data is not None
    return _from_record(data)


def open_tags(state: State, store: Store) -> TagBook:
    """The store's tags; tags an older dstack kept in SQLite are moved there first."""
    book = TagBook(store.objects)
    legacy = state.legacy_tags()
    if legacy is not None:
        for tag, run_name, manifests in legacy:
            if book.find(tag) is None:
                book.set(tag, run_name, manifests)
        state.drop_legacy_tags()
    return book


def tag_run(state: State, store: Store, tag: str, run_name: str, move: bool = False) -> None:
    """Tag a finished run of this home or of a teammate's (found in the store)."""
    run = find_run(state, store, run_name)
    if not run.finished:
        raise RunStateError(
            f"Run '{run_name}' is {run.status}; only finished runs can be tagged.",
            hint=f"wait for it (dstack attach {run_name}) and tag it then",
        )
    open_tags(state, store).set(tag, run_name, run.manifests, move)
