"""Secrets: named values kept 0600 in DSTACK_HOME, given to jobs as environment variables and
masked in their logs. Their values never go into the state, manifests or `inspect`."""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dstack.atomic import write_text_atomic
from dstack.errors import NotFoundError, SpecError
from dstack.home import Home

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MASK = "******"


class Secrets:
    def __init__(self, home: Home) -> None:
        self.path = home.root / "secrets.json"

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {}

    @contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Read-modify-write under a lock; the file is replaced atomically, never readable by others."""
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            write_text_atomic(self.path, json.dumps(data))  # 0600 like its temp file

    def add(self, name: str, value: str) -> None:
        if not _NAME.match(name):
            raise SpecError(
                f"'{name}' cannot be a secret's name: jobs get it as an environment variable.",
                hint="use letters, digits and underscores, not starting with a digit (e.g. WANDB_API_KEY)",
            )
        if not value:
            raise SpecError(
                f"Secret '{name}' has an empty value.", hint="give a value, or delete it"
            )
        with self._editing() as data:
            data[name] = {"value": value, "updated_at": time.time()}

    def delete(self, name: str) -> None:
        with self._editing() as data:
            if name not in data:
                from dstack.spec.suggest import did_you_mean

                raise NotFoundError(
                    f"No secret named '{name}'.",
                    hint=did_you_mean(name, data) or "see `dstack secrets list`",
                )
            del data[name]

    def listing(self) -> list[tuple[str, float]]:
        """Names and when each was last set; never the values."""
        return sorted((name, item["updated_at"]) for name, item in self._read().items())

    def values(self) -> dict[str, str]:
        return {name: item["value"] for name, item in self._read().items()}


def job_env(home: Home) -> dict[str, str]:
    """The secrets as a job's environment, plus the list of variables its logs must mask."""
    values = Secrets(home).values()
    return {**values, "DSTACK_MASK_VARS": " ".join(sorted(values))}
