"""Small JSON records read from a store (run records, tag events): parsed and checked before
use, since anyone who may write to a shared bucket may write them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from dstack.errors import StoreError
from dstack.spec.names import shown

REWRITTEN = "it was damaged or written by something else than dstack"


def read_record(
    key: str, raw: bytes, kind: str, problem: Callable[[str, Any], str | None], hint: str
) -> Any:
    """The JSON under ``key`` when ``problem(key, data)`` finds nothing wrong with it; a
    StoreError naming the ``kind`` of record and its key otherwise."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        why: str | None = f"is not JSON dstack can read ({str(e)[:80]})"
    else:
        why = problem(key, data)
    if why is not None:
        raise StoreError(
            f"The {kind} {shown(key)} in the store {why}.", hint=f"{REWRITTEN}; {hint}"
        )
    return data


def fields_problem(data: object, fields: dict[str, tuple[type, ...]]) -> str | None:
    """Whether ``data`` is an object with each field of its type (bool is never a number,
    and a number is finite): None when it is."""
    if not isinstance(data, dict):
        return f"is a JSON {type(data).__name__}, not an object"
    for name, types in fields.items():
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, types):
            return f"has {type(value).__name__ if name in data else 'nothing'} as '{name}'"
        if isinstance(value, float) and not math.isfinite(value):
            return f"has {value} as '{name}'"
    return None


def printable_problem(name: str, value: str) -> str | None:
    """Text shown in a table (an owner, a host): no control characters that could rewrite
    a teammate's terminal, at most 200 characters."""
    if len(value) > 200 or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        return f"has a '{name}' that is not printable text"
    return None
