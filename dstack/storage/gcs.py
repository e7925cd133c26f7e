"""Google Cloud Storage (google-cloud-storage): `gs://bucket/prefix`.

Files over one chunk go up as a resumable upload (memory: one chunk); the object appears only
when the upload is finalized. `STORAGE_EMULATOR_HOST` points the client at an emulator.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dstack.errors import StoreError
from dstack.storage.bucket import BucketObjectStore
from dstack.storage.upload import Upload

if TYPE_CHECKING:
    from dstack.agent.grants import Grant

CHUNK = 16 * 1024**2  # a multiple of 256 KiB, as resumable uploads require
INSTALL_HINT = "install the GCS extra: pip install 'dstack[gcs]'"
V4_MAX = 7 * 24 * 3600  # the longest a V4 signature (URL or POST policy) may live


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

    # signed rights for a host's agent (dstack.agent.s3post sends GCS forms too) -------------

    def upload_grants(self, scopes: list[str], seconds: int) -> list[Grant] | None:
        """One V4 POST policy per scope, signed here with a service account's key: uploads of
        keys that start with the scope (a scope naming one key: that key only) until the
        expiry (at most 7 days), and nothing else: no reads, listing or deletes. (A downscoped
        token could say the same, but it lives only as long as the laptop's access token, an
        hour.) None when the credentials cannot sign (a user's login: the laptop path)."""
        from dstack.agent.grants import Grant

        signer = self._signer()
        if signer is None:
            return None
        root, url = self._key(""), f"{self.client.api_endpoint}/{self.bucket_name}"
        with self._errors("sign an upload grant for"):
            return [
                Grant(
                    scope,
                    url,
                    root,
                    "gcs-post",
                    _post_policy(signer, self.bucket_name, root + scope, seconds),
                )
                for scope in scopes
            ]

    def download_url(self, key: str, seconds: int) -> str | None:
        """A V4 signed URL reading this one object."""
        signer = self._signer()
        if signer is None:
            return None
        with self._errors("sign a download link for", key):
            url: str = self.bucket.blob(self._key(key)).generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=min(seconds, V4_MAX)),
                method="GET",
                credentials=signer,
                api_access_endpoint=self.client.api_endpoint,
            )
        return url

    def _signer(self) -> Any | None:
        """Credentials that can sign: the client's own when they hold a service account's key,
        else the key file GOOGLE_APPLICATION_CREDENTIALS names (an emulator's client signs
        nothing); None otherwise."""
        from google.auth.credentials import Signing

        credentials = getattr(self.client, "_credentials", None)
        if isinstance(credentials, Signing):
            return credentials
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not path:
            return None
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_file(path)  # type: ignore[no-untyped-call]
        except (OSError, ValueError):  # not a service account's key: nothing to sign with
            return None

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


def _post_policy(signer: Any, bucket: str, key: str, seconds: int) -> dict[str, str]:
    """The form fields of a V4 POST policy allowing uploads to ``bucket`` of keys that start
    with ``key`` (a prefix, ending in '/'), or of ``key`` itself."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{signer.signer_email}/{now:%Y%m%d}/auto/storage/goog4_request"
    fields = {
        "x-goog-algorithm": "GOOG4-RSA-SHA256",
        "x-goog-credential": credential,
        "x-goog-date": stamp,
    }
    expiry = now + timedelta(seconds=min(seconds, V4_MAX))
    document = {
        "conditions": [
            {"bucket": bucket},
            ["starts-with" if key.endswith("/") else "eq", "$key", key],
            *({name: value} for name, value in fields.items()),
        ],
        "expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode())
    signature = signer.sign_bytes(policy).hex()
    return {**fields, "x-goog-signature": signature, "policy": policy.decode()}
