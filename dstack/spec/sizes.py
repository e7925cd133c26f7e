"""Human sizes (16GB) <-> bytes, in binary units as RAM and GPU memory are sold."""

from __future__ import annotations

import re
from typing import Any

_UNITS: dict[str, int | None] = {
    "": None,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any) -> int:
    """'16GB' -> bytes; a bare number is refused as ambiguous."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a size such as 512MB or 16GB")
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"'{value}' is not a size; use a number with a unit: 512MB, 16GB, 1TB")
    factor = _UNITS[unit]
    if factor is None:
        raise ValueError(f"'{value}' has no unit; write e.g. {value}GB or {value}MB")
    return int(float(match.group(1)) * factor)


def format_size(size: int) -> str:
    """Bytes -> a short human size (16GB, 1.5GB, 512MB)."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.3g}{unit}"
    return f"{size}B"
