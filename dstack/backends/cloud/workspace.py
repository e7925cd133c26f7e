"""Where the run stacks' Pulumi state lives, and the passphrase that opens their secrets.

By default: a file backend in DSTACK_HOME/pulumi/state, with a passphrase made for this home
(0600, it never leaves DSTACK_HOME). With a bucket store, the state goes to the store's own
bucket (dstack.config.pulumi_backend_url: the folder `pulumi` beside the run records, unless
`pulumi.backend_url` names another bucket; a `file://` one keeps the stacks to this home):
every home sharing the store then sees the same stacks, and any of them may destroy those
whose runs are done (dstack.backends.cloud.team). Stacks recorded before their state moved
to the bucket are still found in DSTACK_HOME when torn down.
Whoever destroys a stack must open its secrets, so these stacks use the team's passphrase,
made once by the first home that needs it and kept in the store (`pulumi/passphrase`). It
hides nothing from those who can read the bucket, as they can read the state as well;
dstack's run stacks hold no secret values (a run's private key never leaves its home).

The engine reaches the bucket with the same credentials as dstack's store: AWS_* (or the
profile named in the URL), Google's application default credentials, AZURE_STORAGE_*.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.atomic import write_once
from dstack.errors import CloudError, StoreError
from dstack.home import Home

if TYPE_CHECKING:
    from dstack.storage.store import Store

TEAM_PASSPHRASE = "pulumi/passphrase"  # the store key of the shared stacks' passphrase
BUCKETS = ("s3", "gs", "az")


@dataclass(frozen=True)
class StateBackend:
    """A Pulumi state backend and the passphrase of its stacks; ``shared``: every home that
    shares this home's store sees its stacks (a bucket)."""

    url: str
    passphrase: Path
    shared: bool
    env: dict[str, str] = field(default_factory=dict, compare=False)


def pulumi_root(home: Home) -> Path:
    return home.root / "pulumi"


def passphrase_file(home: Home) -> Path:
    """This home's passphrase for the stacks in its own backend: generated once, readable by
    this user only."""
    path = pulumi_root(home) / "passphrase"
    if not path.exists():  # dstack processes starting at once agree on the first one (0600)
        write_once(path, secrets.token_urlsafe(32) + "\n")
    return path


def own_backend(home: Home) -> StateBackend:
    """The file backend in DSTACK_HOME (the default, and where stacks recorded before their
    state moved to the bucket still are)."""
    state = pulumi_root(home) / "state"
    state.mkdir(parents=True, exist_ok=True)
    return StateBackend(state.as_uri(), passphrase_file(home), shared=False)


def shared_store(home: Home) -> bool:
    """Whether the store is a bucket other homes share, with the run stacks' state beside it."""
    from dstack.config import pulumi_backend_url, store_location

    location = store_location(home)
    if location is None or not location.url or location.url.split("://")[0] not in BUCKETS:
        return False
    url = pulumi_backend_url(home)
    return url is not None and not url.startswith("file:")


def state_backend(home: Home, store: Store | None = None) -> StateBackend:
    """Where this home's new stacks go, and the passphrase that opens them."""
    from dstack.config import pulumi_backend_url, store_location

    url = pulumi_backend_url(home)
    if url is None:
        return own_backend(home)
    if not shared_store(home):
        return StateBackend(url, passphrase_file(home), shared=False)
    location = store_location(home)
    env = {"AZURE_STORAGE_ACCOUNT": location.account} if location and location.account else {}
    return StateBackend(url, team_passphrase(home, store), shared=True, env=env)


def team_passphrase(home: Home, store: Store | None = None) -> Path:
    """The shared stacks' passphrase, from the store (made there by the first home to need
    it), kept in DSTACK_HOME beside this home's own (0600) once read."""
    from dstack.storage.store import Store

    store = store or Store.open(home)
    digest = hashlib.sha256(store.url.encode()).hexdigest()[:16]
    path = pulumi_root(home) / f"passphrase-{digest}"
    if path.exists():
        return path
    try:
        found = store.objects.read_versioned(TEAM_PASSPHRASE)
        if found is None:
            store.objects.put_if(TEAM_PASSPHRASE, secrets.token_urlsafe(32).encode(), None)
            found = store.objects.read_versioned(TEAM_PASSPHRASE)  # the first home's
    except StoreError as e:
        raise CloudError(
            f"The passphrase of the team's run stacks could not be read from {store.url}: "
            f"{e.message}",
            hint="the run stacks' Pulumi state is kept in the store's bucket; check that this "
            "machine can read and write it",
        ) from None
    text = found[0].decode(errors="replace").strip() if found else ""
    if len(text) < 32 or not text.isprintable():
        raise CloudError(
            f"The passphrase of the team's run stacks in {store.url} ({TEAM_PASSPHRASE}) is "
            "not one dstack made.",
            hint="if nobody's stacks use it yet, delete it and dstack makes a new one",
        )
    write_once(path, text + "\n")
    return path
