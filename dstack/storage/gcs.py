"""Google Cloud Storage (google-cloud-storage): `gs://bucket/prefix`.

Files over one chunk go up as a resumable upload (memory: one chunk); the object appears only
when the upload is finalized. `STORAGE_EMULATOR_HOST` points the client at an emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from dstack.errors import StoreError
from dstack.storage.bucket import BucketObjectStore
from dstack.storage.upload import Upload

CHUNK = 16 * 1024**2  # a multiple of 256 KiB, as resumable uploads require
INSTALL_HINT = "install the GCS extra: pip install 'dstack[gcs]'"


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

    def _upload(self, name: str, upload: Upload) -> None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(name, chunk_size=CHUNK)
        with upload.verified() as body:
            if upload.sha256 is None:
                blob.upload_from_file(body, size=upload.size)
            else:  # verified before the last chunk commits it; never replaces one there
                with suppress(PreconditionFailed):
                    blob.upload_from_file(body, size=upload.size, if_generation_match=0)
        if upload.progress:
            upload.progress(upload.size)

    def _put_bytes(self, name: str, data: bytes) -> None:
        self.bucket.blob(name).upload_from_string(data)

    def _read(self, name: str) -> Iterator[bytes]:
        with self.bucket.blob(name).open("rb") as reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    def _get_bytes(self, name: str) -> bytes:
        data: bytes = self.bucket.blob(name).download_as_bytes()
        return data

    def _exists(self, name: str) -> bool:
        return bool(self.bucket.blob(name).exists())

    def _read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """The generation comes with the bytes (x-goog-generation)."""
        from google.api_core.exceptions import NotFound

        blob = self.bucket.blob(name)
        try:
            data: bytes = blob.download_as_bytes()
        except NotFound:
            return None
        return data, str(blob.generation)

    def _put_if(self, name: str, data: bytes, version: str | None) -> bool:
        """if_generation_match: 0 creates only, a generation replaces only that one."""
        from google.api_core.exceptions import PreconditionFailed

        match = 0 if version is None else int(version)
        try:
            self.bucket.blob(name).upload_from_string(data, if_generation_match=match)
        except PreconditionFailed:
            return False
        return True

    def _delete(self, name: str) -> None:
        from google.api_core.exceptions import NotFound

        with suppress(NotFound):
            self.bucket.blob(name).delete()

    def _names(self, prefix: str, limit: int | None) -> Iterator[str]:
        blobs = self.client.list_blobs(self.bucket_name, prefix=prefix, max_results=limit)
        return (blob.name for blob in blobs)

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
