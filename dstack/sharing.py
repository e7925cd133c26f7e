"""Run records in the store: what a teammate pointed at the same store sees of this home's runs.

Each home keeps its own runs in SQLite (fast, local) and publishes a small record of each run to
`runs/RUN.json` when it is created and when it ends. A new run's name is claimed by creating its
record, which fails where any home's record of that name exists; later updates are
compare-and-swap writes by the home that claimed it (the record names it under 'home'), and a
finished run's record is never turned back into an active one. Views list the records of runs
this home does not have; records of finished runs are cached, since they never change again.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from dstack.atomic import write_text_atomic
from dstack.errors import NotFoundError, RunStateError, StoreError
from dstack.home import Home
from dstack.spec.names import name_problem, shown
from dstack.state.db import State
from dstack.state.records import ACTIVE, FINAL, RunRecord
from dstack.storage.records import fields_problem, printable_problem, read_record
from dstack.storage.store import Store, run_key
from dstack.tags import TagBook, manifests_by_job, who

log = logging.getLogger(__name__)

PUBLISH_TRIES = 8  # compare-and-swap rounds before a record that keeps changing is left
_HINT = "a teammate's dstack publishes it again when that run is re-run, or remove it"


@dataclass(frozen=True)
class RunInfo:
    """A run as any home sees it: this home's, or a teammate's from a shared store."""

    name: str
    workflow: str
    status: str
    created_at: float
    finished_at: float | None
    exit_code: int | None
    tag: str | None
    owner: str
    # what the agents of a teammate's active run say (dstack.service.agent_views); for this
    # home's active runs, the host of their running jobs
    host: str | None = None  # where its jobs run, as their agents say ("a, b" for several)
    seen_at: float | None = None  # the oldest last heartbeat of its running jobs' agents
    agents: str | None = None  # running, quiet (no heartbeat for a minute), ended, unknown

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)  # flat: asdict's deep copy costs `ps -a` with 10,000 runs

    @staticmethod
    def of(run: RunRecord | RunInfo, owner: str) -> RunInfo:
        return RunInfo(
            run.name,
            run.workflow,
            run.status,
            run.created_at,
            run.finished_at,
            run.exit_code,
            run.tag,
            owner,
        )


@dataclass(frozen=True, kw_only=True)
class SharedRun(RunInfo):
    """A run and the manifests of its jobs: what a home publishes of it to the store
    (``job_names``: its jobs in plan order, as read from a record)."""

    manifests: dict[str, str]
    job_names: tuple[str, ...] = ()


_VIEW_ONLY = ("host", "seen_at", "agents", "job_names")  # never published
JOBS_MAX = 1000  # jobs of one run read from a record


def local_run(state: State, name: str) -> SharedRun:
    run = RunInfo.of(state.run(name), who())
    return SharedRun(**vars(run), manifests=manifests_by_job(state.jobs(name)))


def _record(state: State, store: Store, name: str) -> dict[str, Any]:
    """What this home publishes of its run ``name``."""
    record = {k: v for k, v in local_run(state, name).to_dict().items() if k not in _VIEW_ONLY}
    record["jobs"] = [
        {"workflow": j.workflow, "status": j.status, "exit_code": j.exit_code}
        for j in state.jobs(name)
    ]
    if store.home is not None:
        record["home"] = store.home.id
    return record


def claim_run(state: State, store: Store, name: str) -> bool:
    """Create the record of this home's new run ``name`` unless a record of that name exists
    (another home's run): the name is this home's from then on. For State.create_run."""
    return store.put_run(_record(state, store, name), None)


def publish_run(state: State, store: Store, name: str) -> None:
    """Bring the run's record up to this home's state: a compare-and-swap over the version
    read, read again when another write came first. The record is made after the read, so
    it is at least as new as the one it replaces; a finished run's is never replaced by an
    active one, nor another home's record at all."""
    for _ in range(PUBLISH_TRIES):
        found = store.read_run(name)
        record = _record(state, store, name)
        if found is None:
            if store.put_run(record, None):
                return
            continue
        data = read_record(run_key(name), found[0], "run record", record_problem, _HINT)
        if not _mine(data, store):
            raise StoreError(
                f"The record of run {name} in {store.url} is another home's "
                f"({shown(data['owner'])}): this home's run {name} is not published there.",
                hint="both homes named a run alike before dstack claimed names in the store; "
                "runs started from now on get names of their own",
            )
        if data == record or (data["status"] in FINAL and record["status"] not in FINAL):
            return
        if store.put_run(record, found[1]):
            return
    raise StoreError(
        f"The record of run {name} in {store.url} kept changing while it was being updated.",
        hint="other dstack processes of this home publish it too; the next change of the run "
        "publishes it again",
    )


def _mine(data: dict[str, Any], store: Store) -> bool:
    """Whether a run record is this home's: by its 'home', or, in a record published before
    records named their home, by its owner."""
    if "home" in data:
        return store.home is not None and data["home"] == store.home.id
    return bool(data["owner"] == who())


_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "workflow": (str,),
    "status": (str,),
    "created_at": (int, float),
    "finished_at": (int, float, type(None)),
    "exit_code": (int, type(None)),
    "tag": (str, type(None)),
    "owner": (str,),
    "manifests": (dict,),
}


def record_problem(key: str, data: object) -> str | None:
    """What is wrong with a run record read from the store under ``key`` (a teammate's home
    wrote it, or anyone with write access to the bucket): None when it can be used."""
    why = fields_problem(data, _FIELDS)
    if why is not None:
        return why
    assert isinstance(data, dict)
    if "home" in data and not isinstance(data["home"], str):
        return f"has {type(data['home']).__name__} as 'home'"
    if data["status"] not in (*FINAL, *ACTIVE):
        return f"has an unknown status {shown(data['status'])}"
    names = [
        ("run", data["name"]),
        ("workflow", data["workflow"]),
        *(("job", j) for j in data["manifests"]),
    ]
    if data["tag"] is not None:
        names.append(("tag", data["tag"]))
    for what, name in names:
        problem = name_problem(name)
        if problem:
            return f"has a {what} name that {problem}"
    if not all(isinstance(v, str) for v in data["manifests"].values()):
        return "has manifests that are not keys"
    if run_key(data["name"]) != key:
        return f"names another run ({shown(data['name'])})"
    return printable_problem("owner", data["owner"])


def parse_record(key: str, raw: bytes) -> SharedRun:
    """The run recorded under ``key``; a StoreError naming the key when it is not valid."""
    data = read_record(key, raw, "run record", record_problem, _HINT)
    return SharedRun(**{k: data[k] for k in _FIELDS}, job_names=_job_names(data))


def _job_names(data: dict[str, Any]) -> tuple[str, ...]:
    """The run's jobs in plan order from a checked record: its 'jobs' where they are a list
    of jobs with valid names, else the jobs that have manifests."""
    jobs = data.get("jobs")
    if isinstance(jobs, list) and len(jobs) <= JOBS_MAX:
        names = [j.get("workflow") if isinstance(j, dict) else None for j in jobs]
        valid = [n for n in names if isinstance(n, str) and name_problem(n) is None]
        if len(valid) == len(names):
            return tuple(dict.fromkeys(valid))
    return tuple(data["manifests"])


def shared_runs(home: Home, state: State, store: Store) -> list[SharedRun]:
    """Runs in the store that this home did not start (none in this home's private store).
    A record that is not valid is skipped with a warning naming its key."""
    if not store.shared:
        return []
    mine = state.run_names()
    names = [n for n in store.run_names() if n not in mine]
    if not names:
        return []
    cache_path = home.root / "cache" / "shared-runs.json"
    try:
        cache: dict[str, Any] = json.loads(cache_path.read_text())
    except (FileNotFoundError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    found: dict[str, SharedRun] = {
        n: _from_cache(cache[n])
        for n in names
        if n in cache and not record_problem(run_key(n), cache[n])
    }
    fetch = [n for n in names if n not in found]
    if fetch:

        def fetched(name: str) -> SharedRun | None:
            try:
                return parse_record(run_key(name), store.objects.get_bytes(run_key(name)))
            except StoreError as e:  # this record alone: gone meanwhile, damaged, a bad key
                log.warning("%s Skipped it.", e.message)
                return None

        with ThreadPoolExecutor(store.objects.parallelism) as pool:
            for name, run in zip(fetch, pool.map(fetched, fetch), strict=True):
                if run is not None:
                    found[name] = run
        finals = {n: r.to_dict() for n, r in found.items() if r.finished}
        write_text_atomic(cache_path, json.dumps(finals))
    return [found[n] for n in names if n in found]


def _from_cache(data: dict[str, Any]) -> SharedRun:
    return SharedRun(**{k: data[k] for k in _FIELDS})


def find_run(state: State, store: Store, name: str) -> SharedRun:
    """A run of this home, else one in the store."""
    if state.has_run(name):
        return local_run(state, name)
    problem = name_problem(name)
    if problem:  # never a store key: a typed '../x' must not reach the store
        raise NotFoundError(f"No run named {shown(name)}: a run name {problem}.")
    if not store.objects.exists(run_key(name)):
        try:
            state.run(name)
        except NotFoundError as e:  # did-you-mean over this home's runs
            raise NotFoundError(
                f"No run named '{name}' here or in the store {store.url}.", hint=e.hint
            ) from None
    return parse_record(run_key(name), store.objects.get_bytes(run_key(name)))


def open_tags(state: State, store: Store) -> TagBook:
    """The store's tags; tags an older dstack kept in SQLite are moved there first."""
    book = TagBook(store.objects)
    legacy = state.legacy_tags()
    if legacy is not None:
        for tag, run_name, manifests in legacy:
            with suppress(RunStateError):  # set in the store meanwhile: that one stays
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
