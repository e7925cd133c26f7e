"""Tags name a finished run (or an uploaded set of files) so others can reuse its artifacts.

A tag lives in the store as a history of immutable events, `tags/TAG/TIME-ID.json`, one per
change (set or delete); its value is the latest event. Nothing is ever rewritten, so two people
tagging at once cannot corrupt a tag: both events are kept, in time order, and the later wins.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from dstack.errors import NotFoundError, RunStateError, StoreError
from dstack.storage.objects import ObjectStore


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
        """Every change of the tag, oldest first."""
        return [self._read(key) for key in self.objects.keys(f"tags/{tag}/")]

    def find(self, tag: str) -> TagEvent | None:
        keys = self.objects.keys(f"tags/{tag}/")
        if not keys:
            return None
        event = self._read(keys[-1])
        return event if event.action == "set" else None

    def get(self, tag: str) -> TagEvent:
        found = self.find(tag)
        if found is None:
            from dstack.spec.suggest import did_you_mean

            raise NotFoundError(
                f"No tag named '{tag}'.",
                hint=did_you_mean(tag, [t.tag for t in self.all()])
                or f"tag a finished run with `dstack tags add {tag} -r RUN`, "
                f"or run with `dstack run WORKFLOW -t {tag}`",
            )
        return found

    def all(self) -> list[TagEvent]:
        """The current value of every tag that is set, newest first."""
        latest: dict[str, str] = {}
        for key in self.objects.keys("tags/"):
            parts = key.split("/")
            if len(parts) == 3:
                latest[parts[1]] = max(latest.get(parts[1], ""), key)
        keys = sorted(latest.values())
        if self.objects.remote and len(keys) > 1:
            with ThreadPoolExecutor(self.objects.parallelism) as pool:
                events = list(pool.map(self._read, keys))
        else:
            events = [self._read(k) for k in keys]
        current = [e for e in events if e.action == "set"]
        return sorted(current, key=lambda e: e.created_at, reverse=True)

    def of_run(self, run_name: str) -> list[str]:
        return [e.tag for e in self.all() if e.run_name == run_name]

    def referenced_manifests(self) -> set[str]:
        """Manifests any tag points or pointed to (a tag's history stays downloadable)."""
        keys = [k for k in self.objects.keys("tags/") if k.count("/") == 2]
        return {m for key in keys for m in self._read(key).manifests.values()}

    def check_free(self, tag: str) -> None:
        _check_name(tag)
        current = self.find(tag)
        if current is not None:
            raise RunStateError(
                f"Tag '{tag}' already exists (run {current.run_name}).",
                hint=f"move it with --move (its history keeps {current.run_name}), "
                f"or delete it first: dstack tags delete {tag}",
            )

    def set(self, tag: str, run_name: str, manifests: dict[str, str], move: bool = False) -> None:
        """Point the tag at a run; unless ``move``, only a tag that is not set yet."""
        _check_name(tag)
        if not move:
            self.check_free(tag)
        self._append(TagEvent(tag, "set", run_name, manifests, time.time(), who()))

    def delete(self, tag: str) -> TagEvent:
        current = self.get(tag)
        self._append(TagEvent(tag, "delete", current.run_name, {}, time.time(), who()))
        return current

    def _append(self, event: TagEvent) -> None:
        stamp = f"{time.time_ns():020d}-{os.urandom(4).hex()}"
        data = {k: v for k, v in asdict(event).items() if k != "key"}
        self.objects.put_bytes(f"tags/{event.tag}/{stamp}.json", json.dumps(data).encode())

    def _read(self, key: str) -> TagEvent:
        try:
            data: dict[str, Any] = json.loads(self.objects.get_bytes(key))
            return TagEvent(**data, key=key)
        except (ValueError, TypeError) as e:
            raise StoreError(f"Tag event '{key}' in the store is unreadable: {e}.") from e


def _check_name(tag: str) -> None:
    if not tag or "/" in tag or tag.startswith(".") or any(c.isspace() for c in tag):
        raise RunStateError(
            f"'{tag}' cannot be a tag name.",
            hint="use letters, digits, '-', '_' or '.', without '/' or spaces",
        )


def manifests_by_job(jobs: Iterable[Any]) -> dict[str, str]:
    return {j.workflow: j.manifest for j in jobs if j.manifest}
