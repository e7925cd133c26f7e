"""Checking a store before it is used: it exists (or is created) and this user can use it."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from dstack.atomic import write_text_atomic
from dstack.errors import SpecError, StoreError
from dstack.home import Home
from dstack.storage.location import StoreLocation, open_objects


def check_store(home: Home, options: dict[str, Any]) -> tuple[StoreLocation, list[str]]:
    """Validate the settings, create the bucket when missing, and round-trip a probe object."""
    from pydantic import ValidationError

    from dstack.config import store_location
    from dstack.spec.config import StoreSettings

    saved = store_location(home)
    try:
        if saved is not None and not options:
            settings = saved
        else:
            settings = StoreLocation(**StoreSettings.model_validate(options).model_dump())
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        option = "--store" if field == "url" else f"--{field.replace('_', '-')}"
        raise SpecError(
            f"{option}: {err['msg'].removeprefix('Value error, ')}.",
            hint="e.g. dstack init --store s3://my-bucket/dstack",
        ) from None
    objects = open_objects(settings, home.store_dir, home.sdk_cache)
    notes = objects.ensure_bucket()
    probe = f"dstack-check/{os.urandom(8).hex()}"
    payload = os.urandom(32)
    objects.put_bytes(probe, payload)
    try:
        if objects.get_bytes(probe) != payload:
            raise StoreError(f"{objects.url} returned different bytes than were written.")
        if probe not in objects.keys("dstack-check/"):
            raise StoreError(f"{objects.url} does not list an object just written.")
    finally:
        objects.delete(probe)
    return settings, notes


def save_store_settings(home: Home, settings: StoreLocation) -> None:
    """Write the `store:` section of config.yaml, keeping every other setting."""
    import yaml

    path = home.root / "config.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    data["store"] = {k: v for k, v in asdict(settings).items() if v is not None}
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
