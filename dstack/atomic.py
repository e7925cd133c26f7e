"""Writing a small file so that readers see the old content or the new, never a half.

The temp file is named ``.tmp-NAME.RANDOM``: a listing skips it (a leading dot), and `dstack gc`
removes one that a killed process left behind (TEMP_PREFIX)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def write_text_atomic(path: Path, text: str) -> None:
    """A temp file (0600) in the same folder, then a rename over ``path``."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """The same for bytes."""
    _commit(path, data, os.replace)


def write_once(path: Path, text: str) -> bool:
    """Write ``path`` whole unless it exists (then leave it, and say False): of processes
    racing to create it, exactly one wins and none sees a half-written file."""
    try:
        _commit(path, text.encode(), os.link)
    except FileExistsError:
        return False
    return True


def _commit(path: Path, data: bytes, name: Callable[[str, Path], None]) -> None:
    """``data`` in a temp file (0600) beside ``path``, then given its name by ``name``: a
    rename over it, or a link that fails when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        name(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
