"""From a store URL (and its settings) to an ObjectStore; cloud SDKs are imported only here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dstack.errors import SpecError
from dstack.storage.objects import LocalObjectStore, ObjectStore


@dataclass(frozen=True)
class StoreLocation:
    """The validated `store:` settings (dstack.spec.config.StoreSettings) as plain data."""

    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    project: str | None = None
    account: str | None = None
    direct: bool = True  # hosts write to the store themselves where they can (dstack.agent)


def split_url(url: str) -> tuple[str, str, str]:
    """'s3://bucket/a/b' -> ('s3', 'bucket', 'a/b'); file URLs keep their path as written
    ('file:///srv/x' -> '/srv/x'; a relative 'file://x' stays 'x', see open_objects)."""
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return scheme, "", rest
    bucket, _, prefix = rest.partition("/")
    return scheme, bucket, prefix.strip("/")


def open_objects(
    settings: StoreLocation | None, default: Path, sdk_cache: Path | None = None
) -> ObjectStore:
    """The object store the settings name; ``default`` is the folder used when none is set,
    ``sdk_cache`` a folder where an SDK may keep what it parsed (see sdk_models)."""
    if settings is None or settings.url is None:
        return LocalObjectStore(default)
    scheme, bucket, prefix = split_url(settings.url)
    if scheme == "file":
        if not prefix.startswith("/"):  # refused when validated; a config cached before that
            raise SpecError(
                f"The store URL '{settings.url}' names a relative path.",
                hint=f"give an absolute one: dstack init --store file://{Path(prefix).absolute()}",
            )
        return LocalObjectStore(Path(prefix))
    if scheme == "s3":
        from dstack.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            bucket, prefix, settings.endpoint_url, settings.region, settings.profile, sdk_cache
        )
    if scheme == "gs":
        from dstack.storage.gcs import GCSObjectStore

        return GCSObjectStore(bucket, prefix, settings.project)
    from dstack.storage.azure import AzureObjectStore

    return AzureObjectStore(bucket, prefix, settings.account)
