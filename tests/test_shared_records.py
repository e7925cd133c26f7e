"""Read-modify-write of shared records: tags and run records changed by several homes at once.

Writers are made to race for real: a Gate holds each one's first conditional write until all
of them have read the record and are about to write, so every one of them acts on the same
view, on each kind of store (a folder, SeaweedFS, Azurite, fake-gcs-server).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from buckets import SeaweedS3
from conftest import Project
from test_buckets import new_bucket, use_s3
from test_object_stores import open_store

from dstack.errors import RunStateError, StoreError
from dstack.home import Home
from dstack.sharing import claim_run, publish_run
from dstack.state.db import State
from dstack.state.records import NewJob
from dstack.storage.objects import LocalObjectStore, ObjectStore
from dstack.storage.store import Store, run_key
from dstack.tags import TagBook


class Gate:
    """``objects``, but the first conditional write of each of ``parties`` threads waits until
    all of them are about to write: each has read the record before any of them changed it."""

    def __init__(self, objects: ObjectStore, parties: int) -> None:
        self.objects, self.barrier = objects, threading.Barrier(parties, timeout=60)
        self.passed: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objects, name)

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        if threading.get_ident() not in self.passed:
            self.passed.add(threading.get_ident())
            self.barrier.wait()
        return self.objects.put_if(key, data, version)


def at_once(*actions: Callable[[], object]) -> list[object]:
    """Run each action in its own thread; what each returned, or the exception it raised."""
    results: list[object] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            results[i] = actions[i]()
        except Exception as e:  # noqa: BLE001 - the test looks at it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


MANIFESTS = {"w": "manifests/run-a/w.json"}


@pytest.fixture(params=["file", "s3", "gs", "az"])
def objects(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """A fresh store of each kind, on its real server."""
    return open_store(request.param, request, tmp_path, monkeypatch)


def make_home(root: Path) -> Home:
    root.mkdir(parents=True, exist_ok=True)
    return Home(root)


def test_two_setters_of_a_free_tag_one_wins_and_the_other_is_told_by_whom(
    objects: ObjectStore,
) -> None:
    book = TagBook(Gate(objects, 2))  # type: ignore[arg-type]
    results = at_once(
        lambda: book.set("best", "run-a", MANIFESTS),
        lambda: book.set("best", "run-b", {}),
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert results.count(None) == 1 and len(errors) == 1, results
    history = TagBook(objects).history("best")
    assert len(history) == 1, "one change was made, the other refused"
    winner = history[0].run_name
    assert isinstance(errors[0], RunStateError)
    assert errors[0].message == (
        f"Tag 'best' was set meanwhile by {history[0].by} (to run {winner}); it was not changed."
    )
    assert objects.keys("tags/") == ["tags/best/00000000000000000001.json"]


def test_moves_at_once_are_all_applied_one_after_the_other(objects: ObjectStore) -> None:
    book = TagBook(Gate(objects, 3))  # type: ignore[arg-type]
    runs = ["run-a", "run-b", "run-c"]
    results = at_once(*(partial(book.set, "best", run, {}, True) for run in runs))
    assert results == [None, None, None]
    history = TagBook(objects).history("best")
    assert sorted(e.run_name for e in history) == runs, "each move is in the history"
    assert objects.keys("tags/best/") == [f"tags/best/{n:020d}.json" for n in (1, 2, 3)]
    assert TagBook(objects).get("best").run_name == history[-1].run_name


def test_deleting_at_once_deletes_once_and_names_who_did(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    TagBook(objects).set("best", "run-a", MANIFESTS)
    book = TagBook(Gate(objects, 2))  # type: ignore[arg-type]
    results = at_once(lambda: book.delete("best"), lambda: book.delete("best"))
    [deleted] = [r for r in results if not isinstance(r, Exception)]
    [error] = [r for r in results if isinstance(r, Exception)]
    assert deleted.run_name == "run-a"  # type: ignore[union-attr]
    assert isinstance(error, RunStateError)
    assert error.message.startswith("Tag 'best' was deleted meanwhile by ")
    assert [e.action for e in TagBook(objects).history("best")] == ["set", "delete"]


def event(tag: str, run: str) -> bytes:
    data = {"tag": tag, "action": "set", "run_name": run, "manifests": {}}
    return json.dumps({**data, "created_at": 1.0, "by": "old@dstack"}).encode()


def test_a_history_written_before_numbers_is_continued_in_order(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    old = [
        "tags/best/01700000000000000000-0a0b0c0d.json",
        "tags/best/01700000000000000007-ffffffff.json",
    ]
    for key, run in zip(old, ["run-a", "run-b"], strict=True):
        objects.put_bytes(key, event("best", run))
    book = TagBook(objects)
    assert book.get("best").run_name == "run-b"
    with pytest.raises(RunStateError, match="already exists"):
        book.set("best", "run-c", {})
    book.set("best", "run-c", {}, move=True)
    assert objects.keys("tags/best/") == [*old, "tags/best/01700000000000000008.json"]
    assert [e.run_name for e in book.history("best")] == ["run-a", "run-b", "run-c"]
    assert book.get("best").run_name == "run-c"


def test_a_planted_last_number_is_refused_clearly(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    objects.put_bytes("tags/best/99999999999999999999.json", event("best", "run-a"))
    book = TagBook(objects)
    assert book.get("best").run_name == "run-a", "it is still read"
    with pytest.raises(StoreError) as refused:
        book.set("best", "run-b", {}, move=True)
    assert "no number fits" in refused.value.message
    assert "tags/best/99999999999999999999" in str(refused.value.hint)
    assert objects.keys("tags/") == ["tags/best/99999999999999999999.json"], "nothing written"


# --- run records ---------------------------------------------------------------------------


def new_run(state: State, store: Store) -> str:
    return state.create_run(
        workflow="w",
        repo_dir="/repo",
        args=[],
        variables={},
        tag=None,
        snapshot={},
        jobs=[NewJob("w", {"name": "w"})],
        claim=partial(claim_run, state, store),
    )


def record(objects: ObjectStore, name: str) -> dict[str, Any]:
    return json.loads(objects.get_bytes(run_key(name)))  # type: ignore[no-any-return]


def test_two_homes_drawing_one_run_name_at_once_get_a_name_each(
    objects: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["same-name-1", "same-name-1", "other-name-2"])
    lock = threading.Lock()

    def drawn() -> str:
        with lock:
            return next(names)

    monkeypatch.setattr("dstack.state.db.new_run_name", drawn)
    gate = Gate(objects, 2)
    homes = [make_home(tmp_path / name) for name in ("home-a", "home-b")]
    states = [State(home) for home in homes]
    stores = [Store(gate, home) for home in homes]  # type: ignore[arg-type]
    made = at_once(*(partial(new_run, s, st) for s, st in zip(states, stores, strict=True)))
    assert sorted(made) == ["other-name-2", "same-name-1"], made  # type: ignore[type-var]
    for home, state, name in zip(homes, states, made, strict=True):
        assert isinstance(name, str) and state.run_names() == {name}, "the lost name was let go"
        assert record(objects, name)["home"] == home.id, "each record is its creator's"


class Hold(Gate):
    """``objects``, but the first conditional write of each thread waits for ``release``."""

    def __init__(self, objects: ObjectStore) -> None:
        super().__init__(objects, 1)
        self.arrived, self.release = threading.Event(), threading.Event()

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        if threading.get_ident() not in self.passed:
            self.passed.add(threading.get_ident())
            self.arrived.set()
            assert self.release.wait(60)
        return self.objects.put_if(key, data, version)


def test_a_slower_publisher_never_turns_a_finished_record_back(
    objects: ObjectStore, tmp_path: Path
) -> None:
    home = make_home(tmp_path / "home")
    state = State(home)
    name = new_run(state, Store(objects, home))
    state.update_run(name, status="running")
    hold = Hold(objects)
    slow = threading.Thread(target=lambda: publish_run(State(home), Store(hold, home), name))  # type: ignore[arg-type]
    slow.start()
    assert hold.arrived.wait(60), "it read the record and is about to write 'running'"
    state.finish_run(name, "done", 0)
    publish_run(state, Store(objects, home), name)
    hold.release.set()
    slow.join(60)
    assert record(objects, name)["status"] == "done", "the slower write was refused"
    state.update_run(name, status="running")  # as a process of this home that is behind
    publish_run(state, Store(objects, home), name)
    assert record(objects, name)["status"] == "done", "a finished record stays finished"


def test_a_record_of_another_home_is_never_replaced(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    home = make_home(tmp_path / "home")
    state = State(home)
    name = new_run(state, Store(objects, home))
    theirs = {**record(objects, name), "home": "0123456789ab", "owner": "them@elsewhere"}
    objects.put_bytes(run_key(name), json.dumps(theirs).encode())
    state.finish_run(name, "done", 0)
    with pytest.raises(StoreError, match=r"is another home's \('them@elsewhere'\)"):
        publish_run(state, Store(objects, home), name)
    assert record(objects, name) == theirs


# --- the CLI, several homes on one bucket ---------------------------------------------------


@pytest.fixture
def bucket() -> str:
    return new_bucket()


@pytest.fixture
def homes(
    project: Project, tmp_path: Path, s3_server: SeaweedS3, bucket: str
) -> Iterator[list[Project]]:
    """Three homes (people) sharing one SeaweedFS bucket, each with a finished run of its
    own, tagged 'mine-N'."""
    made = [project, *(Project(project.root, tmp_path / f"home{i}") for i in (1, 2))]
    try:
        for i, home in enumerate(made):
            use_s3(home, s3_server, bucket)
            home.write(f"d{i}/x.txt", str(i))
            home.dstack("tags", "add", f"mine-{i}", "-a", f"d{i}", check=True)
        yield made
    finally:
        for home in made[1:]:
            home.cleanup()


def tagged_runs(home: Project) -> dict[str, str]:
    listed = json.loads(home.dstack("tags", "list", "--json", check=True).stdout)
    return {t["name"]: t["run"] for t in listed}


def test_two_homes_tagging_at_once_one_wins_the_other_says_who_did(
    homes: list[Project],
) -> None:
    runs = tagged_runs(homes[0])
    procs = [
        home.popen("tags", "add", "best", "-r", runs[f"mine-{i}"])
        for i, home in enumerate(homes[:2])
    ]
    done = [(proc.wait(120), proc.communicate()[1]) for proc in procs]
    assert sorted(code for code, _ in done) == [0, 1], done
    winner = tagged_runs(homes[2])["best"]
    [refusal] = [err for code, err in done if code == 1]
    error = refusal.splitlines()[0]
    assert error.startswith("Error: Tag 'best' ") and winner in error, refusal
    assert "was set meanwhile by " in error or ", set by " in error, "and by whom"
    assert len(refusal.splitlines()) == 2 and "Traceback" not in refusal, "one error, one hint"


def test_homes_moving_one_tag_at_once_apply_or_report_every_move(
    homes: list[Project], s3_server: SeaweedS3, bucket: str
) -> None:
    runs = tagged_runs(homes[0])
    outcomes: list[tuple[int, str]] = []

    def mover(i: int) -> None:
        for _ in range(2):
            done = homes[i].dstack("tags", "add", "best", "-r", runs[f"mine-{i}"], "--move")
            outcomes.append((done.returncode, done.stderr))

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    applied = [err for code, err in outcomes if code == 0]
    reported = [err for code, err in outcomes if code != 0]
    assert all("kept changing" in err and "Traceback" not in err for err in reported), reported
    history = json.loads(homes[1].dstack("tags", "history", "best", "--json", check=True).stdout)
    assert len(history) == len(applied), "each move applied is in the history, no other"
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="team/tags/best/")
    keys = [item["Key"] for item in listed["Contents"]]
    assert keys == [f"team/tags/best/{n:020d}.json" for n in range(1, len(applied) + 1)]
    views = [tagged_runs(home)["best"] for home in homes]
    assert views == [history[-1]["run_name"]] * 3, "every home sees the latest move"
