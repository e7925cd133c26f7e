"""S3 and S3-compatible servers (boto3's botocore and s3transfer): `s3://bucket/prefix`.

Small files go up in one request; large ones in parts through s3transfer's manager (a part is
read from disk when it is sent, so memory stays flat); S3 makes an object visible only when its
upload completes. The client is made with botocore directly: boto3's resource layer is never
used and importing it would cost every command a fifth of a second.
"""

from __future__ import annotations

import threading
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstack.errors import ContentMismatch, StoreError
from dstack.retry import retry
from dstack.storage.bucket import BucketObjectStore
from dstack.storage.upload import Progress, Upload

if TYPE_CHECKING:
    from dstack.agent.grants import Grant

PART = 32 * 1024**2
CONFLICT_TRIES = 4  # a 409 while another home writes the same blob: wait for its end
INSTALL_HINT = "install the S3 extra: pip install 'dstack[s3]'"


class S3ObjectStore(BucketObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        model_cache: Path | None = None,
    ) -> None:
        try:
            import botocore.session
            from botocore.config import Config
        except ImportError:
            raise StoreError("s3:// stores need boto3.", hint=INSTALL_HINT) from None
        super().__init__("s3", bucket, prefix)
        self.region = region
        with self._errors("connect to"):
            session = botocore.session.Session(profile=profile)
            if model_cache is not None:
                from dstack.storage.sdk_models import cache_models

                cache_models(session, model_cache)
            self.client = session.create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                config=Config(
                    max_pool_connections=self.parallelism * 2,
                    retries={"max_attempts": 5, "mode": "standard"},
                    tcp_keepalive=True,
                    # Bodies carry a CRC32 the server checks (and TLS on https), as botocore
                    # does on https anyway; signing them too would hash every byte once more
                    # on plain-http endpoints. dstack verifies sha256 on every read.
                    s3={"payload_signing_enabled": False},
                    signature_version="s3v4",  # upload grants too (SigV2 is gone on AWS)
                ),
            )
        self._manager: Any = None
        self._manager_lock = threading.Lock()

    def _transfers(self) -> Any:
        """s3transfer's manager, made on first use: only large files need it."""
        with self._manager_lock:
            if self._manager is None:
                from s3transfer.manager import TransferConfig, TransferManager

                config = TransferConfig(
                    multipart_threshold=PART, multipart_chunksize=PART, max_request_concurrency=8
                )
                self._manager = TransferManager(self.client, config)
            return self._manager

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """SDK exceptions become one clear sentence naming the bucket and what to do."""
        from botocore import exceptions as bx

        where = self._where(key)
        try:
            yield
        except _Busy:
            raise StoreError(f"Cannot {action} {where}: it stays busy.") from None
        except bx.ClientError as e:
            raise _client_error(e, action, where, self) from None
        except bx.NoCredentialsError:
            raise StoreError(
                f"Cannot {action} {where}: no AWS credentials were found.",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or store.profile in "
                "DSTACK_HOME/config.yaml",
            ) from None
        except bx.ProfileNotFound as e:
            raise StoreError(
                f"Cannot {action} {where}: {e}.", hint="check store.profile in config.yaml"
            ) from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as e:
            raise StoreError(
                f"Cannot {action} {where}: the endpoint is unreachable ({e}).",
                hint="check store.endpoint_url and your network",
            ) from None
        except bx.BotoCoreError as e:
            raise StoreError(f"Cannot {action} {where}: {e}.") from None

    def _upload(self, name: str, upload: Upload) -> None:
        if upload.size > PART and not upload.span:
            # Blobs are at most a chunk, but for a file dstack downloaded and verified itself
            # (SFTP collection): that private copy goes up in parts, as any large file.
            subscribers = [_Progress(upload.progress)] if upload.progress else []
            self._transfers().upload(
                str(upload.src), self.bucket_name, name, subscribers=subscribers
            ).result()
            return
        # One request for a small file or a span (the transfer manager's threads cost more than
        # they save, and it would hold a span's parts in memory). With the hash the server
        # verifies the very content address (and botocore skips its own CRC32: 0.7 s of CPU per
        # GB); If-None-Match: a blob already there is never replaced.
        checks = (
            {"ChecksumSHA256": b64encode(bytes.fromhex(upload.sha256)).decode(), "IfNoneMatch": "*"}
            if upload.sha256
            else {}
        )

        def put_once() -> None:
            with upload.open() as body, _write_once(bool(upload.sha256)) as put:
                self.client.put_object(Bucket=self.bucket_name, Key=name, Body=body, **checks)
            if put.conflict:  # another home is writing the same blob: wait for its end
                raise _Busy

        retry(
            put_once,
            retry_on=lambda e: isinstance(e, _Busy),
            wait=0.2,
            max_wait=0.8,
            attempts=CONFLICT_TRIES,
        )
        if upload.progress:
            upload.progress(upload.size)

    def _put_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket_name, Key=name, Body=data)

    def _read(self, name: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket_name, Key=name)["Body"]
        yield from body.iter_chunks(1 << 20)

    def _get_bytes(self, name: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket_name, Key=name)["Body"].read()
        return data

    def _exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket_name, Key=name)
            return True
        except ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _read_versioned(self, name: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket_name, Key=name)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise
        return got["Body"].read(), str(got["ETag"])

    def _put_if(self, name: str, data: bytes, version: str | None) -> bool:
        """If-None-Match: * creates only; If-Match: ETAG replaces only that version. 412: the
        condition failed; 409: another conditional write of the key is under way; NoSuchKey
        (If-Match on AWS): the version read is gone."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self.client.put_object(Bucket=self.bucket_name, Key=name, Body=data, **condition)
        except ClientError as e:
            lost = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey")
            if _code(e) in lost:
                return False
            raise
        return True

    def upload_grants(self, scopes: list[str], seconds: int) -> list[Grant] | None:
        """One signed POST policy per scope: uploads of keys starting with it, until the
        expiry, and nothing else (no reads, no listing, no deletes; works on AWS and on
        S3-compatible servers that implement browser uploads, SeaweedFS and MinIO among them)."""
        from dstack.agent.grants import Grant

        root = self._key("")
        grants = []
        with self._errors("sign an upload grant for"):
            for scope in scopes:
                post = self.client.generate_presigned_post(
                    self.bucket_name,
                    f"{root}{scope}${{filename}}",
                    Conditions=[["starts-with", "$key", f"{root}{scope}"]],
                    ExpiresIn=seconds,
                )
                fields = {k: v for k, v in post["fields"].items() if k != "key"}
                grants.append(Grant(scope, post["url"], root, "s3-post", fields))
        return grants

    def download_url(self, key: str, seconds: int) -> str | None:
        """A presigned GET of one object (a host's agent polls it for a stop request): its
        holder may read that key until the expiry, nothing else; 404 while it is absent."""
        with self._errors("sign a read link for", key):
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket_name, "Key": self._key(key)},
                ExpiresIn=seconds,
            )
        return str(url)

    def _delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket_name, Key=name)

    def _names(self, prefix: str, limit: int | None) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket_name, Prefix=prefix
        )
        for page in pages:
            yield from (item["Key"] for item in page.get("Contents", []))

    # dstack init ---------------------------------------------------------------------

    def ensure_bucket(self) -> list[str]:
        """Create the bucket with versioning when it is missing; returns what was done."""
        from botocore.exceptions import ClientError

        notes = []
        with self._errors("reach the bucket of"):
            try:  # a listing, not HEAD: its error body tells bad keys from missing rights
                self.client.list_objects_v2(Bucket=self.bucket_name, MaxKeys=1)
            except ClientError as e:
                if _code(e) not in ("404", "NoSuchBucket"):
                    raise
                region = self.region or self.client.meta.region_name
                kwargs: dict[str, Any] = {"Bucket": self.bucket_name}
                if region and region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
                self.client.create_bucket(**kwargs)
                notes.append(f"created bucket {self.bucket_name}")
        with self._errors("turn on versioning for"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket_name).get("Status")
            if status != "Enabled":
                self.client.put_bucket_versioning(
                    Bucket=self.bucket_name, VersioningConfiguration={"Status": "Enabled"}
                )
                notes.append("turned on object versioning")
        return notes


class _Busy(Exception):
    """A write-once put met another write of the same key under way (S3's 409)."""


@dataclass
class _Put:
    conflict: bool = False  # S3's 409: another write of the same key is under way


@contextmanager
def _write_once(write_once: bool) -> Iterator[_Put]:
    """A write-once put whose key exists is refused with 412: the blob is there already."""
    from botocore.exceptions import ClientError

    put = _Put()
    try:
        yield put
    except ClientError as e:
        code = _code(e)
        if write_once and code in ("ConditionalRequestConflict", "409"):
            put.conflict = True
        elif not (write_once and code in ("PreconditionFailed", "412")):
            raise


class _Progress:
    """An s3transfer subscriber that passes byte counts on."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_progress(self, bytes_transferred: int, **kwargs: Any) -> None:
        self.progress(bytes_transferred)

    def on_queued(self, **kwargs: Any) -> None: ...

    def on_done(self, **kwargs: Any) -> None: ...


def _code(e: Any) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _client_error(e: Any, action: str, where: str, store: S3ObjectStore) -> StoreError:
    error = e.response.get("Error", {})
    code = str(error.get("Code", ""))
    headers = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return StoreError(
            f"Cannot {action} {where}: the credentials were refused ({code}).",
            hint="check the access key and secret (or store.profile) for this bucket",
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return StoreError(
            f"Cannot {action} {where}: permission denied ({error.get('Message') or code}).",
            hint="the credentials need s3:GetObject, s3:PutObject, s3:ListBucket and "
            "s3:DeleteObject on this bucket (and s3:CreateBucket for dstack init)",
        )
    bucket_region = headers.get("x-amz-bucket-region")
    if code in (
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "301",
        "IllegalLocationConstraintException",
    ):
        return StoreError(
            f"Cannot {action} {where}: wrong region"
            + (f" (the bucket is in {bucket_region})" if bucket_region else f" ({code})")
            + ".",
            hint=f"set store.region: {bucket_region or 'REGION'} in DSTACK_HOME/config.yaml",
        )
    if code in ("NoSuchBucket",):
        return StoreError(
            f"Cannot {action} {where}: bucket {store.bucket_name} does not exist.",
            hint=f"create it: dstack init --store {store.url}",
        )
    if code in ("BadDigest", "XAmzContentChecksumMismatch"):
        return ContentMismatch(f"Cannot {action} {where}: the bytes changed while being sent.")
    if code in ("NoSuchKey", "404"):
        return StoreError(f"Object {where} is missing from the store.")
    if code == "InvalidBucketName":
        return StoreError(
            f"Cannot {action} {where}: '{store.bucket_name}' is not a valid bucket name.",
            hint="bucket names are 3-63 lowercase letters, digits, '-' and '.'",
        )
    message = str(error.get("Message", e)).rstrip(".")
    return StoreError(f"Cannot {action} {where}: {code}: {message}.")
