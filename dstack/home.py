"""DSTACK_HOME: where state, the local store, run folders and cached environments live."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dstack.atomic import write_once
from dstack.errors import HomeError

_ID = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def hash_cache(self) -> Path:
        """File hashes by (size, mtime, inode), kept between the commands that store files."""
        return self.root / "cache" / "hashes.json"

    @property
    def sdk_cache(self) -> Path:
        """What a cloud SDK parsed once and may reuse (botocore's service models)."""
        return self.root / "cache" / "sdk-models"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def venvs_dir(self) -> Path:
        return self.root / "venvs"

    def job_dir(self, run: str, workflow: str) -> Path:
        return self.runs_dir / run / workflow

    @cached_property
    def id(self) -> str:
        """This home's random name, made once: it keeps apart the folders that several homes
        make on a host they share (each may have a run named swift-otter-12)."""
        path = self.root / "id"
        if not path.exists():
            write_once(path, secrets.token_hex(6) + "\n")  # of homes racing, the first wins
        found = path.read_text().strip()
        if not _ID.fullmatch(found):
            raise HomeError(
                f"{path} does not hold a home id (12 hex digits).",
                hint=f"remove the file; dstack makes a new one ({path})",
            )
        return found


def home_path() -> Path:
    value = os.environ.get("DSTACK_HOME")
    return Path(value).expanduser() if value else Path.home() / ".dstack"


def open_home(create: bool = True) -> Home:
    """Return the home, creating it 0700 on first use; an unusable one is a clear error."""
    root = home_path()
    hint = "set DSTACK_HOME to a folder you can write, e.g. export DSTACK_HOME=~/.dstack"
    try:
        if create:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise HomeError(f"Cannot create DSTACK_HOME {root}: {e.strerror}.", hint=hint) from e
    if not root.is_dir():
        raise HomeError(f"DSTACK_HOME {root} is not a folder.", hint=hint)
    if create and not os.access(root, os.W_OK | os.X_OK):
        raise HomeError(f"DSTACK_HOME {root} is not writable by this user.", hint=hint)
    return Home(root)
