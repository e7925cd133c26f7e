"""`DSTACK_HOME/config.yaml`: optional settings; absent means the embedded defaults.

```yaml
backends:
  local: {enabled: true}          # this machine runs jobs
  ssh:
    keep_run_dirs: false          # remove a job's folder on the host once its artifacts are safe
    hosts:                        # own servers, added to the pool on first use
      - {name: gpu1, host: 10.0.0.7, user: me, identity_file: ~/.ssh/id_ed25519}
  aws:                            # a cloud dstack may use (also gcp, azure); limits all optional
    regions: [us-east-1]
    instance_types: [g5.xlarge, g5.2xlarge]
    spot: auto                    # never | auto (for interruptible jobs) | only
    max_instances: 2              # VMs at once, across every dstack process
    max_price: 2.5                # USD per hour
    allowed_cidr: 203.0.113.7/32  # who may reach SSH (default: this machine's public address)
    boot_timeout: 600             # seconds a new VM may take to answer SSH
pulumi:
  backend_url: s3://my-bucket/pulumi  # where stack state lives (default: the bucket store's
                                      # folder pulumi/, else DSTACK_HOME/pulumi)
store:                            # shared, versioned artifacts (default: DSTACK_HOME/store)
  url: s3://my-bucket/dstack      # or gs://bucket/prefix, az://container/prefix, file:///path
  region: eu-west-1               # s3: region, profile, endpoint_url (S3-compatible servers)
  direct: true                    # hosts write their jobs' data to it themselves (an agent)
```
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.atomic import write_text_atomic
from dstack.errors import SpecError
from dstack.home import Home

if TYPE_CHECKING:
    from dstack.spec.config import Config
    from dstack.storage.location import StoreLocation


def _parse(path: Path) -> Config:
    from pydantic import ValidationError

    from dstack.spec.config import Config
    from dstack.spec.suggest import did_you_mean
    from dstack.spec.yamlio import line_of, load_yaml

    data = load_yaml(path, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}:1: expected a mapping of settings (backends, store, pulumi), "
            f"not {'a list' if isinstance(data, list) else type(data).__name__}.",
            hint="see the example at the top of dstack/config.py or the README",
        )
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        node: Any = data
        line = 1
        for part in err["loc"]:
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if not (in_list or (isinstance(node, dict) and part in node)):
                break
            line = line_of(node, part) or line
            node = node[part]
        field = ".".join(str(p) for p in err["loc"])
        message, hint = (
            err["msg"].removeprefix("Value error, "),
            "see the example at the top of dstack/config.py or the README",
        )
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            hint = did_you_mean(str(err["loc"][-1]), _keys_at(Config, err["loc"][:-1])) or hint
        raise SpecError(f"{path}:{line}: field '{field}': {message}.", hint=hint) from None


def _keys_at(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where ``loc`` points, for did-you-mean hints."""
    import typing

    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = [a for a in typing.get_args(annotation) if hasattr(a, "model_fields")]
        model = args[0] if args else annotation
    return list(model.model_fields)


def backend_section(home: Home, name: str) -> dict[str, Any] | None:
    """A backend's validated section of config.yaml; None without one (or without a file)."""
    data = validated_config(home)
    if data is None:
        return None
    section: dict[str, Any] | None = data["backends"].get(name)
    return section


def pulumi_backend_url(home: Home) -> str | None:
    """`pulumi.backend_url` (s3://…, gs://…, azblob://…, file://…); without one, the folder
    `pulumi` of a bucket store (state_in_store), so every home sharing the store sees the run
    stacks and any of them can tear down those whose runs are done; None: the default, a
    folder in DSTACK_HOME."""
    data = validated_config(home)
    url: str | None = (data or {}).get("pulumi", {}).get("backend_url")
    if url or data is None:
        return url
    return state_in_store(store_location(home))


def state_in_store(location: StoreLocation | None) -> str | None:
    """The Pulumi DIY backend URL of the folder `pulumi` in a bucket store, with the store's
    S3 settings as the engine reads them (an S3-compatible endpoint path-style, as Pulumi's
    docs on DIY backends give it); None for a folder store."""
    if location is None or not location.url or "://" not in location.url:
        return None
    scheme, _, rest = location.url.partition("://")
    folder = f"{rest.strip('/')}/pulumi"
    if scheme == "s3":
        from urllib.parse import urlencode

        query = {
            "region": location.region,
            "profile": location.profile,
            "endpoint": location.endpoint_url,
            "s3ForcePathStyle": "true" if location.endpoint_url else None,
        }
        given = {k: v for k, v in query.items() if v}
        return f"s3://{folder}" + (f"?{urlencode(given, safe=':/')}" if given else "")
    if scheme == "gs":
        return f"gs://{folder}"
    if scheme == "az":
        return f"azblob://{folder}"
    return None


def validated_config(home: Home) -> dict[str, Any] | None:
    """config.yaml as validated plain data, cached until the file (or dstack) changes, so a
    command reading its settings imports neither YAML nor pydantic (0.2 s)."""
    from dstack import __version__

    path = home.root / "config.yaml"
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _validated(path, f"{__version__}:{st.st_mtime_ns}:{st.st_size}")


@lru_cache(maxsize=4)
def _validated(path: Path, stamp: str) -> dict[str, Any]:
    """Read once per process: from the JSON cache beside it, else parsed and validated."""
    cache = path.parent / "cache" / "config.json"
    try:
        saved = json.loads(cache.read_text())
        if saved["stamp"] == stamp:
            return saved["config"]  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    data: dict[str, Any] = _parse(path).model_dump(mode="json")
    write_text_atomic(cache, json.dumps({"stamp": stamp, "config": data}))
    return data


def store_location(home: Home) -> StoreLocation | None:
    """Where the store is; None without a config file: the folder in DSTACK_HOME."""
    from dstack.storage.location import StoreLocation

    data = validated_config(home)
    return StoreLocation(**data["store"]) if data else None
