"""Small JSON records read from a store (run records, tag events): parsed and checked before
use, since anyone who may write to a shared bucket may write them."""

from __future__ import annotations

import json
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
