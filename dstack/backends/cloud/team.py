"""The run stacks of every home sharing a bucket store: one record per stack in the store
(`stacks/NAME.json`), so that any home's `dstack gc` finds the stacks of runs that are done,
wherever they were started, and exactly one home destroys each (their Pulumi state is in the
same bucket: dstack.backends.cloud.workspace).

A record's life, every change a compare-and-swap (ObjectStore.put_if):
  live        made beside the home's own row (dstack.state.stacks), before anything exists
  destroying  claimed by the home about to destroy the stack; another home finding the claim
              leaves the stack to it and waits for the end; a claim older than CLAIM_STALE
              was left by a home that died mid-way, and is taken over
  destroyed   left by a home that destroyed another home's stack: when that home comes back
              it finishes its job from the store rather than look for the host, forgets its
              row and deletes the record
A home that destroys its own stack deletes the record. Records come from a shared bucket that
anyone with write access may have written: each is checked before use (one that fails is
skipped with a warning, and never destroyed on its word).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace

from dstack.errors import StoreError
from dstack.spec.names import name_problem, shown
from dstack.storage.records import fields_problem, printable_problem, read_record
from dstack.storage.store import Store, run_key

PREFIX = "stacks/"
STATES = ("live", "destroying", "destroyed")
CLAIM_STALE = 30 * 60.0  # seconds: longer than any cloud takes to destroy a VM
CLAIM_TRIES = 8  # compare-and-swap rounds before giving up on a record that keeps changing
# A teammate's stack whose job has sealed its data is left to its home for this long (its
# supervisor, when alive, tears the host down within seconds); the VM powers itself off
# after as long (stacks.spec.AFTER_SEAL). DSTACK_GC_AFTER_SEAL overrides it (seconds).
AFTER_SEAL = 10 * 60.0
DEADLINE_MARGIN = 3600.0  # past the host's own power-off deadline, its job is surely over

log = logging.getLogger(__name__)

_HOME_ID = re.compile(r"[0-9a-f]{12}")
_HINT = "a teammate's dstack writes it when it records a stack; remove it if nobody did"
_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "run": (str,),
    "job": (str,),
    "backend": (str,),
    "home": (str,),
    "owner": (str,),
    "created_at": (int, float),
    "state": (str,),
    "by": (str, type(None)),
    "by_owner": (str, type(None)),
    "since": (int, float, type(None)),
}


@dataclass(frozen=True)
class TeamStack:
    """A stack as the store records it; ``by``/``by_owner``/``since``: who claimed it (or
    destroyed it), and when. ``version``: what the record was read at (for put_if)."""

    name: str
    run: str
    job: str
    backend: str
    home: str
    owner: str
    created_at: float
    state: str = "live"
    by: str | None = None
    by_owner: str | None = None
    since: float | None = None
    version: str = field(default="", compare=False)

    def encode(self) -> bytes:
        data = asdict(self)
        del data["version"]
        return json.dumps(data).encode()

    def claimed_by_another(self, me: str, now: float) -> bool:
        """Destroying at another home's hands, and that home is (as far as it shows) alive."""
        fresh = self.since is not None and now - self.since < CLAIM_STALE
        return self.state == "destroying" and self.by != me and fresh


def stack_key(name: str) -> str:
    return f"{PREFIX}{name}.json"


def after_seal() -> float:
    value = os.environ.get("DSTACK_GC_AFTER_SEAL")
    try:
        return max(0.0, float(value)) if value else AFTER_SEAL
    except ValueError:
        return AFTER_SEAL


def record_problem(key: str, data: object) -> str | None:
    """What is wrong with a stack record read from ``key``; None when it can be used."""
    why = fields_problem(data, _FIELDS)
    if why is not None:
        return why
    assert isinstance(data, dict)
    for what in ("run", "job", "backend"):
        problem = name_problem(data[what])
        if problem:
            return f"has a {what} name that {problem}"
    named = f"dstack-{data['run']}-{data['job']}"  # as hosts.stack_name (not imported: ps)
    if data["name"] != named or stack_key(data["name"]) != key:
        return f"names another stack ({shown(data['name'])})"
    if not _HOME_ID.fullmatch(data["home"]) or (data["by"] and not _HOME_ID.fullmatch(data["by"])):
        return "names a home that is not a home id"
    if data["state"] not in STATES:
        return f"has an unknown state {shown(data['state'])}"
    return printable_problem("owner", data["owner"]) or printable_problem(
        "by_owner", data["by_owner"] or ""
    )


def parse(key: str, raw: bytes, version: str) -> TeamStack:
    data = read_record(key, raw, "stack record", record_problem, _HINT)
    return TeamStack(**{k: data[k] for k in _FIELDS}, version=version)


def read(store: Store, name: str) -> TeamStack | None:
    """The stack's record; None when there is none, or when it cannot be used (a warning
    says why)."""
    found = store.objects.read_versioned(stack_key(name))
    if found is None:
        return None
    try:
        return parse(stack_key(name), *found)
    except StoreError as e:
        log.warning("%s Skipped it.", e.message)
        return None


def listed(store: Store) -> list[TeamStack]:
    """Every usable stack record in the store."""
    names = [k[len(PREFIX) : -5] for k in store.objects.keys(PREFIX) if k.endswith(".json")]
    if len(names) <= 1:
        found = [read(store, n) for n in names]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(store.objects.parallelism, len(names))) as pool:
            found = list(pool.map(lambda n: read(store, n), names))
    return [r for r in found if r is not None]


def publish(store: Store, stack: TeamStack) -> None:
    """Make the stack's record (once: a retry finds its own)."""
    store.objects.put_if(stack_key(stack.name), stack.encode(), None)


@dataclass(frozen=True)
class Claim:
    """``outcome``: mine (this home may destroy it now), busy (another home is on it),
    destroyed (another home did it), absent (no record: gone, or made before records)."""

    outcome: str
    record: TeamStack | None


def claim(store: Store, name: str, me: str, me_owner: str) -> Claim:
    """Take the stack for destroying, unless another home has it."""
    for _ in range(CLAIM_TRIES):
        found = read(store, name)
        if found is None:
            return Claim("absent", None)
        if found.state == "destroyed":
            return Claim("destroyed", found)
        now = time.time()
        if found.claimed_by_another(me, now):
            return Claim("busy", found)
        mine = replace(found, state="destroying", by=me, by_owner=me_owner, since=now)
        if store.objects.put_if(stack_key(name), mine.encode(), found.version):
            return Claim("mine", mine)
    raise StoreError(f"The record of stack {name} in {store.url} kept changing.")


def _change(store: Store, name: str, me: str, state: str | None) -> None:
    """This home's claim of the stack ends: back to ``state`` (live: it could not be
    destroyed; destroyed: a tombstone for its home), or the record is deleted (None)."""
    for _ in range(CLAIM_TRIES):
        found = read(store, name)
        if found is None or found.state != "destroying" or found.by != me:
            return  # taken over meanwhile (this home took too long): the taker decides
        if state is None:
            store.objects.delete(stack_key(name))
            return
        changed = replace(found, state=state, since=time.time())
        if state == "live":
            changed = replace(changed, by=None, by_owner=None, since=None)
        if store.objects.put_if(stack_key(name), changed.encode(), found.version):
            return


def release(store: Store, name: str, me: str) -> None:
    """Give the stack back (this home could not destroy it): the next gc anywhere tries."""
    _change(store, name, me, "live")


def destroyed(store: Store, name: str, me: str, own: bool) -> None:
    """The stack is gone: its record too when it was this home's, else a tombstone."""
    _change(store, name, me, None if own else "destroyed")


def forget(store: Store, name: str) -> None:
    """Delete a record once its home has taken note (a tombstone, or an own record)."""
    store.objects.delete(stack_key(name))


def why_left(store: Store, stack: TeamStack, now: float, deadline_minutes: int) -> str | None:
    """Why another home's stack is left behind (its run is over, or its job ended and its
    data is sealed long enough ago that its home is surely not there); None while it may
    still be in use."""
    from dstack.sharing import parse_record
    from dstack.storage.joblogs import read_status

    if now - stack.created_at > deadline_minutes * 60 + DEADLINE_MARGIN:
        return f"{stack.owner}'s host passed its deadline (it powered itself off)"
    found = store.read_run(stack.run)
    if found is None:
        return f"{stack.owner}'s run was removed"
    try:
        run = parse_record(run_key(stack.run), found[0])
    except StoreError as e:
        log.warning("%s", e.message)
        return None
    if run.finished:
        return f"{stack.owner}'s run is {run.status}"
    status = read_status(store.objects, stack.run, stack.job)
    if status is None or not status.sealed or status.heartbeat_at is None:
        return None
    if now - status.heartbeat_at >= after_seal():
        return (
            f"{stack.owner}'s job ended (exit code {status.exit_code}) and its host sealed its "
            "data; its home has not torn it down"
        )
    return None
