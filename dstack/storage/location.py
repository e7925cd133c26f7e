"""From a store URL (and its settings) to an ObjectStore; cloud SDKs are imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dstack.storage.objects import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    from dstack.spec.config import StoreSettings


def split_url(url: str) -> tuple[str, str, str]:
    """'s3://bucket/a/b' -> ('s3', 'bucket', 'a/b'); file URLs keep their whole path."""
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return scheme, "", "/" + rest.lstrip("/")
    bucket, _, prefix = rest.partition("/")
    return scheme, bucket, prefix.strip("/")


def open_objects(settings: StoreSettings | None, default: Path) -> ObjectStore:
    """The object store the settings name; ``default`` is the folder used when none is set."""
    if settings is None or settings.url is None:
        return LocalObjectStore(default)
    scheme, bucket, prefix = split_url(settings.url)
    if scheme == "file":
        return LocalObjectStore(Path(prefix))
    if scheme == "s3":
        from dstack.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            bucket, prefix, settings.endpoint_url, settings.region, settings.profile
        )
    if scheme == "gs":
        from dstack.storage.gcs import GCSObjectStore

        return GCSObjectStore(bucket, prefix, settings.project)
    from dstack.storage.azure import AzureObjectStore

    return AzureObjectStore(bucket, prefix, settings.account)
