"""`DSTACK_HOME/config.yaml`: optional settings; absent means the embedded defaults."""

from __future__ import annotations

from typing import Any

from dstack.errors import SpecError
from dstack.home import Home


def load_config(home: Home) -> dict[str, Any]:
    path = home.root / "config.yaml"
    if not path.exists():
        return {}
    from dstack.spec.yamlio import load_yaml

    data = load_yaml(path, str(path))
    if data is not None and not isinstance(data, dict):
        raise SpecError(
            f"{path}:1: expected a mapping.", hint="backends:\n  local:\n    enabled: false"
        )
    return dict(data or {})


def local_enabled(home: Home) -> bool:
    """This machine runs jobs unless `backends.local.enabled` is false."""
    local = (load_config(home).get("backends") or {}).get("local") or {}
    return bool(local.get("enabled", True))
