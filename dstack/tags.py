"""Tags name a finished run (or an uploaded set of files) so others can reuse its artifacts.

A tag lives in the store as a history of immutable events, `tags/TAG/N.json`, one per change
(set or delete), numbered from 1 (N in 20 digits); its value is the latest event. A change is
written create-only under the number after the latest one, so of changes made at once exactly
one wins and the others learn it: each is retried (--move), or refused with an error naming who
changed the tag meanwhile, never silently overwritten. Histories written before are named
`TIME-ID.json` (TIME in nanoseconds, 20 digits); new events continue their numbers, so every
history sorts by its keys. Nothing is ever rewritten.

Anyone who can write to a shared bucket can write there, so every event is checked before use
(its key, its JSON, each field's type, the names in it); one that fails is skipped with a
warning naming its key, and the tag's value is its latest valid event.
"""

from __future__ import annotations

import getpass
import json
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from dstack.errors import NotFoundError, RunStateError, SpecError, StoreError
from dstack.spec.names import NAME_MAX, NAME_RULE, name_problem, shown
from dstack.storage.objects import ObjectStore
from dstack.storage.records import fields_problem, printable_problem, read_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagEvent:
    tag: str
    action: str  # "set" or "delete"
    run_name: str
    manifests: dict[str, str]
    created_at: float
    by: str
    key: str = field(default="", compare=False)


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class TagBook:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def history(self, tag: str) -> list[TagEvent]:
        """Every valid change of the tag, oldest first."""
        check_tag(tag)
        return self._valid(self.objects.keys(f"tags/{tag}/"))

    def find(self, tag: str) -> TagEvent | None:
        check_tag(tag)
        return self._current(self.objects.keys(f"tags/{tag}/"))

    def get(self, tag: str) -> TagEvent:
        found = self.find(tag)
        if found is None:
            raise self._missing(tag)
        return found

    def _current(self, keys: list[str]) -> TagEvent | None:
        """The run the tag names after the events under ``keys``: its latest valid event."""
        for key in reversed(keys):
            event = self._event(key)
            if event is not None:
                return event if event.action == "set" else None
        return None

    def _missing(self, tag: str) -> NotFoundError:
        from dstack.spec.suggest import did_you_mean

        return NotFoundError(
            f"No tag named '{tag}'.",
            hint=did_you_mean(tag, [t.tag for t in self.all()])
            or f"tag a finished run with `dstack tags add {tag} -r RUN`, "
            f"or run with `dstack run WORKFLOW -t {tag}`",
        )

    def all(self) -> list[TagEvent]:
        """The current value of every tag that is set, newest first."""
        by_tag: dict[str, list[str]] = {}
        for key in self.objects.keys("tags/"):
            parts = key.split("/")
            if len(parts) == 3:
                by_tag.setdefault(parts[1], []).append(key)
        latest = [max(keys) for keys in by_tag.values()]
        current = []
        for key, event in zip(latest, self._read_all(latest), strict=True):
            if event is None:  # skipped with a warning: its tag's latest valid event counts
                earlier = self._valid(sorted(by_tag[key.split("/")[1]])[:-1])
                event = earlier[-1] if earlier else None
            if event is not None and event.action == "set":
                current.append(event)
        return sorted(current, key=lambda e: e.created_at, reverse=True)

    def of_run(self, run_name: str) -> list[str]:
        return [e.tag for e in self.all() if e.run_name == run_name]

    def referenced_manifests(self) -> set[str]:
        """Manifests any tag points or pointed to (a tag's history stays downloadable)."""
        keys = [k for k in self.objects.keys("tags/") if k.count("/") == 2]
        return {m for event in self._valid(keys) for m in event.manifests.values()}

    def check_free(self, tag: str) -> None:
        current = self.find(tag)
        if current is not None:
            raise _taken(current)

    def set(self, tag: str, run_name: str, manifests: dict[str, str], move: bool = False) -> None:
        """Point the tag at a run; unless ``move``, only a tag that is not set: one set
        meanwhile by someone else is an error naming them."""
        check_tag(tag)

        def setting(current: TagEvent | None, beaten_by: TagEvent | None) -> TagEvent:
            if current is not None and not move:
                if beaten_by is not None and beaten_by.action == "set":
                    raise RunStateError(
                        f"Tag '{tag}' was set meanwhile by {beaten_by.by} (to run "
                        f"{beaten_by.run_name}); it was not changed.",
                        hint=f"move it with --move if {run_name} should have it after all",
                    )
                raise _taken(current)
            return TagEvent(tag, "set", run_name, manifests, time.time(), who())

        self._change(tag, setting)

    def delete(self, tag: str) -> TagEvent:
        """Delete the tag (its history keeps it); returns the event it had. A change that
        came first is an error naming it: what was deleted is what the caller saw."""
        check_tag(tag)

        def deleting(current: TagEvent | None, beaten_by: TagEvent | None) -> TagEvent:
            if beaten_by is not None:
                what = "deleted" if current is None else f"moved to run {beaten_by.run_name}"
                raise RunStateError(
                    f"Tag '{tag}' was {what} meanwhile by {beaten_by.by}; it was not deleted.",
                    hint=f"look at it again: dstack tags history {tag}",
                )
            if current is None:
                raise self._missing(tag)
            return TagEvent(tag, "delete", current.run_name, {}, time.time(), who())

        current = self._change(tag, deleting)
        assert current is not None  # deleting() refuses a tag that is not set
        return current

    def _change(
        self, tag: str, change: Callable[[TagEvent | None, TagEvent | None], TagEvent]
    ) -> TagEvent | None:
        """Append ``change(current, beaten_by)``, which raises when it may not be made, under
        the history's next number: created only if no other change took that number first.
        Beaten, it is asked again (``beaten_by``: the change that came first), up to
        CHANGE_TRIES times. Returns the event that was current before."""
        beaten_by: TagEvent | None = None
        for attempt in range(CHANGE_TRIES):
            if attempt:  # racers drift apart
                time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 4)))
            keys = self.objects.keys(f"tags/{tag}/")
            current = self._current(keys)
            event = change(current, beaten_by)
            key = next_key(tag, keys)
            data = {k: v for k, v in asdict(event).items() if k != "key"}
            if self.objects.put_if(key, json.dumps(data).encode(), None):
                return current
            winner = self.objects.read_versioned(key)  # None: its write is not visible yet
            if winner is not None:
                beaten_by = self._event(key, winner[0]) or beaten_by
        last = f" (the last by {beaten_by.by}, to run {beaten_by.run_name})" if beaten_by else ""
        raise RunStateError(
            f"Tag '{tag}' kept changing: each of {CHANGE_TRIES} tries to change it was beaten "
            f"by another change{last}.",
            hint=f"see its history (dstack tags history {tag}) and try again",
        )

    def _valid(self, keys: list[str]) -> list[TagEvent]:
        """The events under ``keys`` that are valid, in order."""
        return [e for e in self._read_all(keys) if e is not None]

    def _read_all(self, keys: list[str]) -> list[TagEvent | None]:
        if self.objects.remote and len(keys) > 1:
            with ThreadPoolExecutor(self.objects.parallelism) as pool:
                return list(pool.map(self._event, keys))
        return [self._event(k) for k in keys]

    def _event(self, key: str, raw: bytes | None = None) -> TagEvent | None:
        """The event under ``key`` (its bytes ``raw`` when read already); None, with a warning
        naming the key, when it is not valid."""
        try:
            return parse_event(key, self.objects.get_bytes(key) if raw is None else raw)
        except StoreError as e:
            log.warning("%s Skipped it.", e.message)
            return None


def _taken(current: TagEvent) -> RunStateError:
    return RunStateError(
        f"Tag '{current.tag}' already exists (run {current.run_name}, set by {current.by}).",
        hint=f"move it with --move (its history keeps {current.run_name}), "
        f"or delete it first: dstack tags delete {current.tag}",
    )


_FIELDS: dict[str, tuple[type, ...]] = {
    "tag": (str,),
    "action": (str,),
    "run_name": (str,),
    "manifests": (dict,),
    "created_at": (int, float),
    "by": (str,),
}
_MANIFEST_KEY = re.compile(r"manifests/[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*\.json")
# N.json, or TIME-ID.json as written before changes were numbered
_EVENT_KEY = re.compile(r"tags/[^/]+/([0-9]{20})(?:-[0-9a-f]{8})?\.json")
CHANGE_TRIES = 10  # changes beaten by others before one is given up


def next_key(tag: str, keys: list[str]) -> str:
    """The key of the tag's next event: the number after its latest event's (1 for a new
    tag), so that all who change the tag at once aim at one key and one of them creates it."""
    numbers = [m[1] for key in keys if (m := _EVENT_KEY.fullmatch(key))]
    last = max(numbers, default="0")
    if last == "9" * 20:  # planted: no number comes after it in 20 digits
        raise StoreError(
            f"Tag '{tag}' cannot change: its history has an event numbered {last}, after which "
            "no number fits.",
            hint=f"someone with write access to the store wrote it; remove the objects "
            f"tags/{tag}/{last}* from the store, then try again",
        )
    return f"tags/{tag}/{int(last) + 1:020d}.json"


def event_problem(key: str, data: object) -> str | None:
    """What is wrong with a tag event read from the store under ``key``; None when it can be
    used. Its names become store keys and folder names, so they are checked like a user's."""
    if not _EVENT_KEY.fullmatch(key):
        return "is not named like a tag event (tags/TAG/N.json)"
    why = fields_problem(data, _FIELDS)
    if why is not None:
        return why
    assert isinstance(data, dict)
    if data["tag"] != key.split("/")[1]:
        return f"names another tag ({shown(data['tag'])})"
    if data["action"] not in ("set", "delete"):
        return f"has an unknown action {shown(data['action'])}"
    for what, name in [
        ("tag", data["tag"]),
        ("run", data["run_name"]),
        *(("job", job) for job in data["manifests"]),
    ]:
        problem = name_problem(name)
        if problem:
            return f"has a {what} name that {problem}"
    if not all(
        isinstance(m, str) and _MANIFEST_KEY.fullmatch(m) for m in data["manifests"].values()
    ):
        return "has manifests that are not keys of manifests (manifests/RUN/JOB.json)"
    return printable_problem("by", data["by"])


def parse_event(key: str, raw: bytes) -> TagEvent:
    """The tag event under ``key``; a StoreError naming the key when it is not valid."""
    data = read_record(key, raw, "tag event", event_problem, "remove the object")
    return TagEvent(**{k: data[k] for k in _FIELDS}, key=key)


def check_tag(tag: str) -> None:
    """A tag name given by the user: it becomes a store key (`tags/TAG/...`)."""
    problem = name_problem(tag)
    if problem:
        raise SpecError(
            f"The tag name {shown(tag)} {problem}.",
            hint=f"tag names hold {NAME_RULE}, at most {NAME_MAX} characters; e.g. baseline-v2",
        )


def manifests_by_job(jobs: Iterable[Any]) -> dict[str, str]:
    return {j.workflow: j.manifest for j in jobs if j.manifest}
