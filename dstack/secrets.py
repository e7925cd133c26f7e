"""Secrets: named values kept 0600 in DSTACK_HOME, given to jobs as environment variables and
masked in their logs. Their values never go into the state, manifests or `inspect`.

Masking works on pieces (``mask_pieces``): each value, and each line of a multi-line value (a
key file, a JSON credential), also as shells and JSON quote them, so `set -x`, an error message
that quotes the value, or a loop that prints it line by line all show ****** instead.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dstack.atomic import write_text_atomic
from dstack.errors import HomeError, NotFoundError, SpecError
from dstack.home import Home

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MASK = "******"
# Lines of a multi-line value shorter than this ('{', '},', '---') are not masked on their own:
# they would turn every brace in the logs into ******, and hide nothing.
MIN_MASKED_LINE = 4
# What a job's shell needs as the system set it: a variable by such a name would replace it
# (a job given its own PATH finds no command and dies without a word).
SHELL_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "SHELL",
        "IFS",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
    }
)
# What dstack sets for each job itself (and the prefix of the job wrapper's own variables).
_DSTACK_NAME = re.compile(r"^(DSTACK_\w*|PORT_[0-9]+|PYTHONUNBUFFERED)$")


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable a job is given; None when it can."""
    if not _NAME.match(name):
        return "it is not a valid environment variable name"
    if name in SHELL_NAMES:
        return f"it would replace the ${name} that the job's shell needs"
    return None


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a secret's name; None when it can."""
    problem = env_name_problem(name)
    if problem is None and _DSTACK_NAME.match(name):
        problem = "dstack sets that variable for each job itself"
    return problem


def _name_hint(name: str) -> str:
    if not _NAME.match(name):
        return "use letters, digits and underscores, not starting with a digit (e.g. WANDB_API_KEY)"
    return f"pick a name of your own, e.g. MY_{name}"


class Secrets:
    def __init__(self, home: Home) -> None:
        self.path = home.root / "secrets.json"

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as e:
            raise HomeError(
                f"{self.path} is not a secrets file dstack can read ({e}).",
                hint="fix it by hand, or move it away and add the secrets again",
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(item, dict) and isinstance(item.get("value"), str) for item in data.values()
        ):
            raise HomeError(
                f"{self.path} is not a secrets file dstack can read (not a mapping of names "
                "to {value, updated_at}).",
                hint="fix it by hand, or move it away and add the secrets again",
            )
        return data

    @contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Read-modify-write under a lock; the file is replaced atomically, never readable by others."""
        from filelock import FileLock

        with FileLock(self.path.with_suffix(".lock")):
            data = self._read()
            yield data
            write_text_atomic(self.path, json.dumps(data))  # 0600 like its temp file

    def add(self, name: str, value: str) -> None:
        problem = secret_name_problem(name)
        if problem:
            raise SpecError(
                f"'{name}' cannot be a secret's name: {problem}.", hint=_name_hint(name)
            )
        if not value.strip():
            raise SpecError(
                f"Secret '{name}' has an empty value.", hint="give a value, or delete it"
            )
        if "\0" in value:
            raise SpecError(
                f"Secret '{name}' holds a NUL byte, which no environment variable can carry.",
                hint="store binary data base64-encoded (base64 -w0 FILE | dstack secrets add NAME)",
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
        return sorted((name, item.get("updated_at", 0.0)) for name, item in self._read().items())

    def values(self) -> dict[str, str]:
        return {name: item["value"] for name, item in self._read().items()}


def check_names(values: dict[str, str]) -> None:
    """Refuse secrets stored under a name a job cannot be given (saved by an older dstack, or
    by hand): the job would start without its PATH or with dstack's variables replaced."""
    for name in sorted(values):
        problem = secret_name_problem(name)
        if problem:
            raise SpecError(
                f"Secret '{name}' cannot be given to jobs: {problem}.",
                hint=f"rename it: dstack secrets delete {name}, then "
                f"dstack secrets add {'MY_' + name if _NAME.match(name) else 'NEW_NAME'}",
            )


def job_env(home: Home) -> dict[str, str]:
    """The secrets as a job's environment, plus the list of variables its logs must mask."""
    values = Secrets(home).values()
    check_names(values)
    return {**values, "DSTACK_MASK_VARS": " ".join(sorted(values))}


def mask_pieces(values: Iterable[str]) -> list[str]:
    """What to replace with MASK, longest first: each value and each line of it (lines shorter
    than MIN_MASKED_LINE excepted), blanks around them stripped, each also as a shell quotes
    it (`set -x`, coreutils' messages: ' becomes '\\''), as JSON does and as Python's repr
    does (a traceback, a printed dict)."""
    pieces: set[str] = set()
    for value in values:
        lines = [line.strip() for line in value.splitlines()]
        for text in [value.strip(), *(line for line in lines if len(line) >= MIN_MASKED_LINE)]:
            if text:
                pieces |= {
                    text,
                    text.replace("'", "'\\''"),
                    json.dumps(text, ensure_ascii=False)[1:-1],
                    repr(text)[1:-1],
                }
    return sorted(pieces, key=lambda piece: (-len(piece), piece))
