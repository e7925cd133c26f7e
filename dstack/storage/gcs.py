"""Google Cloud Storage (google-cloud-storage): `gs://bucket/prefix`.

Files over one chunk go up as a resumable upload (memory: one chunk); the object appears only
when the upload is finalized. `STORAGE_EMULATOR_HOST` points the client at an emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from itertools import islice
from pathlib import Path

from dstack.errors import StoreError
from dstack.storage.objects import BucketObjectStore, Progress, Span, VerifiedReader, open_span

CHUNK = 16 * 1024**2  # a multiple of 256 KiB, as resumable uploads require
INSTALL_HINT = "install the GCP extra: pip install 'dstack[gcp]'"


class GCSObjectStore(BucketObjectStore):
    def __init__(self, bucket: str, prefix: str, project: str | None = None) -> None:
        try:
            from google.cloud import storage
        except ImportError:
            raise StoreError("gs:// stores need google-cloud-storage.", hint=INSTALL_HINT) from None
        super().__init__("gs", bucket, prefix)
        self.project = project
        with self._errors("connect to"):
            self.client = storage.Client(project=project)
            self.bucket = self.client.bucket(bucket)

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        import requests
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        where = self._where(key)
        try:
            yield
        except ax.DefaultCredentialsError:
            raise StoreError(
                f"Cannot {action} {where}: no Google Cloud credentials were found.",
                hint="run `gcloud auth application-default login` or set "
                "GOOGLE_APPLICATION_CREDENTIALS",
            ) from None
        except (ax.RefreshError, gx.Unauthorized) as e:
            raise StoreError(
                f"Cannot {action} {where}: the credentials were refused ({e}).",
                hint="log in again: gcloud auth application-default login",
            ) from None
        except gx.Forbidden as e:
            raise StoreError(
                f"Cannot {action} {where}: permission denied ({e.message}).",
                hint="the account needs roles/storage.objectAdmin on this bucket",
            ) from None
        except gx.NotFound:
            raise StoreError(
                f"Cannot {action} {where}: not found.",
                hint=f"create the bucket with: dstack init --store {self.url}",
            ) from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise StoreError(
                f"Cannot {action} {where}: the endpoint is unreachable ({e}).",
                hint="check your network (or STORAGE_EMULATOR_HOST)",
            ) from None
        except gx.GoogleAPIError as e:
            raise StoreError(f"Cannot {action} {where}: {e}.") from None

    def put_file(
        self,
        key: str,
        src: Path,
        progress: Progress | None = None,
        span: Span | None = None,
        sha256: str | None = None,
    ) -> None:
        from google.api_core.exceptions import PreconditionFailed

        size = span[1] if span else src.stat().st_size
        with self._errors("upload to", key), open_span(src, span) as body:
            blob = self.bucket.blob(self._key(key), chunk_size=CHUNK)
            if sha256 is None:
                blob.upload_from_file(body, size=size)
            else:  # verified before the last chunk commits it; never replaces one there
                with suppress(PreconditionFailed):
                    blob.upload_from_file(
                        VerifiedReader(body, size, sha256, str(src)),
                        size=size,
                        if_generation_match=0,
                    )
        if progress:
            progress(size)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self.bucket.blob(self._key(key)).upload_from_string(data)

    def open_read(self, key: str) -> Iterator[bytes]:
        with self._errors("read", key), self.bucket.blob(self._key(key)).open("rb") as reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            data: bytes = self.bucket.blob(self._key(key)).download_as_bytes()
            return data

    def exists(self, key: str) -> bool:
        with self._errors("look up", key):
            return bool(self.bucket.blob(self._key(key)).exists())

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with self._errors("delete", key), suppress(NotFound):
            self.bucket.blob(self._key(key)).delete()

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        cut = len(self._key(""))
        with self._errors("list", prefix):
            blobs = self.client.list_blobs(
                self.bucket_name, prefix=self._key(prefix), max_results=limit
            )
            return [blob.name[cut:] for blob in islice(blobs, limit)]

    def ensure_bucket(self) -> list[str]:
        from google.api_core.exceptions import NotFound

        notes = []
        with self._errors("reach the bucket of"):
            try:
                bucket = self.client.get_bucket(self.bucket_name)
            except NotFound:
                bucket = self.client.bucket(self.bucket_name)
                bucket.versioning_enabled = True
                bucket = self.client.create_bucket(bucket)
                notes.append(f"created bucket {self.bucket_name} with object versioning")
            if not bucket.versioning_enabled:
                bucket.versioning_enabled = True
                bucket.patch()
                notes.append("turned on object versioning")
        return notes
