"""Azure Blob Storage (azure-storage-blob): `az://container/prefix`.

The account comes from `AZURE_STORAGE_CONNECTION_STRING`, or from `store.account` with
`AZURE_STORAGE_KEY` (or azure-identity's default credential when it is installed). Large files
go up as blocks committed at the end, so a reader never sees a half-written blob.
"""

from __future__ import annotations

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

INSTALL_HINT = "install the Azure Blob extra: pip install 'dstack[azblob]'"
DELEGATION_MAX = 7 * 24 * 3600 - 300  # a user delegation key lives at most 7 days


class AzureObjectStore(BucketObjectStore):
    def __init__(self, container: str, prefix: str, account: str | None = None) -> None:
        try:
            from azure.storage.blob import BlobServiceClient
        except ImportError:
            raise StoreError("az:// stores need azure-storage-blob.", hint=INSTALL_HINT) from None
        super().__init__("az", container, prefix)
        with self._errors("connect to"):
            self.service = _service(BlobServiceClient, account)
            self.container = self.service.get_container_client(container)

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        from azure.core import exceptions as zx

        where = self._where(key)
        try:
            yield
        except zx.ClientAuthenticationError as e:
            raise StoreError(
                f"Cannot {action} {where}: the credentials were refused ({e.reason}).",
                hint="check AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY",
            ) from None
        except zx.ResourceNotFoundError:
            raise StoreError(
                f"Cannot {action} {where}: not found.",
                hint=f"create the container with: dstack init --store {self.url}",
            ) from None
        except zx.HttpResponseError as e:
            if e.status_code == 403:
                raise StoreError(
                    f"Cannot {action} {where}: permission denied ({e.reason}).",
                    hint="the identity needs the Storage Blob Data Contributor role",
                ) from None
            raise StoreError(f"Cannot {action} {where}: {e.reason or e}.") from None
        except zx.ServiceRequestError as e:
            raise StoreError(
                f"Cannot {action} {where}: the endpoint is unreachable ({e}).",
                hint="check the account name (or the connection string) and your network",
            ) from None
        except (ValueError, zx.AzureError) as e:
            raise StoreError(f"Cannot {action} {where}: {e}.") from None

    def _upload(self, name: str, upload: Upload) -> None:
        from azure.core.exceptions import ResourceExistsError

        done = 0

        def hook(current: int, total: int | None) -> None:
            nonlocal done
            if upload.progress and current > done:
                upload.progress(current - done)
                done = current

        # A blob (sha256) is read in order and verified before it is committed (one put, or
        # the block list at the end); one already there is never replaced.
        blob = upload.sha256 is not None
        with upload.verified() as data, suppress(*((ResourceExistsError,) if blob else ())):
            self.container.upload_blob(
                name,
                data,
                length=upload.size,
                overwrite=not blob,
                max_concurrency=1 if blob else 8,
                progress_hook=hook,
            )

    def _put_bytes(self, name: str, data: bytes) -> None:
        self.container.upload_blob(name, data, overwrite=True)

    def _read(self, name: str) -> Iterator[bytes]:
        yield from self.container.download_blob(name).chunks()

    def _get_bytes(self, name: str) -> bytes:
        data: bytes = self.container.download_blob(name).readall()
        return data

    def _exists(self, name: str) -> bool:
        return bool(self.container.get_blob_client(name).exists())

    def _read_versioned(self, name: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self.container.download_blob(name)
        except ResourceNotFoundError as e:
            if getattr(e, "error_code", None) == "ContainerNotFound":
                raise
            return None
        return download.readall(), str(download.properties.etag)

    def _put_if(self, name: str, data: bytes, version: str | None) -> bool:
        """overwrite=False creates only; an ETag with IfNotModified replaces only that
        version (412 ConditionNotMet otherwise, or BlobNotFound when it is gone)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        blob = self.container.get_blob_client(name)
        try:
            if version is None:
                blob.upload_blob(data, overwrite=False)
            else:
                blob.upload_blob(
                    data,
                    overwrite=True,
                    etag=version,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        except ResourceNotFoundError as e:
            if version is None or getattr(e, "error_code", None) == "ContainerNotFound":
                raise
            return False
        return True

    # SAS tokens for a host's agent (dstack.agent.azblob) -----------------------------------

    def upload_grants(self, scopes: list[str], seconds: int) -> list[Grant] | None:
        """SAS tokens as narrow as a flat-namespace account allows: a SAS names a container or
        one blob, never a key prefix. Keys written once (a scope ending in '/': content-
        addressed blobs, log parts) go up under one container SAS that may only create blobs:
        nothing there can be replaced, read, listed or deleted, but a new blob can be created
        anywhere in the container (the limit of SAS; an account with a hierarchical namespace
        could scope a directory). Each key that is rewritten (a scope naming one key, and the
        status in a job's folder) gets a SAS for that one blob. None when the credentials
        cannot sign (a connection string that itself holds a SAS)."""
        from azure.storage.blob import (
            BlobSasPermissions,
            ContainerSasPermissions,
            generate_blob_sas,
            generate_container_sas,
        )

        from dstack.agent.grants import Grant

        root, url = self._key(""), self.container.url.split("?")[0]
        with self._errors("sign an upload grant for"):
            signer = self._signer(seconds)
            if signer is None:
                return None
            create = generate_container_sas(
                self.container.account_name,
                self.bucket_name,
                permission=ContainerSasPermissions(create=True),
                **signer,
            )
            grants = [
                Grant(s, url, root, "az-sas", {"sas": create, "once": "1"})
                for s in scopes
                if s.endswith("/")
            ]
            for key in _rewritten(scopes):
                sas = generate_blob_sas(
                    self.container.account_name,
                    self.bucket_name,
                    self._key(key),
                    permission=BlobSasPermissions(create=True, write=True),
                    **signer,
                )
                grants.append(Grant(key, url, root, "az-sas", {"sas": sas}))
        return grants

    def download_url(self, key: str, seconds: int) -> str | None:
        """A read-only SAS for this one blob."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        name = self._key(key)
        with self._errors("sign a download link for", key):
            signer = self._signer(seconds)
            if signer is None:
                return None
            sas = generate_blob_sas(
                self.container.account_name,
                self.bucket_name,
                name,
                permission=BlobSasPermissions(read=True),
                **signer,
            )
        return f"{self.container.get_blob_client(name).url.split('?')[0]}?{sas}"

    def _signer(self, seconds: int) -> dict[str, Any] | None:
        """What signs a SAS valid for ``seconds``: the account key, or else a user delegation
        key (Azure AD logins; needs the Storage Blob Delegator role, lives at most 7 days)."""
        now = datetime.now(UTC)
        credential = self.container.credential
        https = self.container.url.startswith("https:")
        common: dict[str, Any] = {"protocol": "https"} if https else {}
        key = getattr(credential, "account_key", None)
        if key:
            return {**common, "account_key": key, "expiry": now + timedelta(seconds=seconds)}
        if not hasattr(credential, "get_token"):
            return None
        expiry = now + timedelta(seconds=min(seconds, DELEGATION_MAX))
        delegation = self.service.get_user_delegation_key(now, expiry)
        return {**common, "user_delegation_key": delegation, "expiry": expiry}

    def _delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with suppress(ResourceNotFoundError):
            self.container.delete_blob(name)

    def _names(self, prefix: str, limit: int | None) -> Iterator[str]:
        return iter(self.container.list_blob_names(name_starts_with=prefix))

    def ensure_bucket(self) -> list[str]:
        from azure.core.exceptions import ResourceExistsError

        with self._errors("create the container of"):
            try:
                self.container.create_container()
            except ResourceExistsError:
                return []
        return [
            f"created container {self.container.container_name} (blob versioning is an "
            "account setting on Azure: turn it on for the storage account)"
        ]


def _rewritten(scopes: list[str]) -> list[str]:
    """The keys among ``scopes`` that are written more than once: a scope naming one key (a
    job's manifest), and the status in a job's folder (dstack.agent.keys), whose log parts
    are written once."""
    from dstack.agent.keys import job_prefix, status_key

    keys = [scope for scope in scopes if not scope.endswith("/")]
    for scope in scopes:
        parts = scope.split("/")
        if len(parts) == 4 and parts[0] == "jobs" and scope == job_prefix(parts[1], parts[2]):
            keys.append(status_key(parts[1], parts[2]))
    return list(dict.fromkeys(keys))


def _service(client_class: Any, account: str | None) -> Any:
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        return client_class.from_connection_string(connection)
    if not account:
        raise StoreError(
            "az:// stores need an account.",
            hint="set store.account in DSTACK_HOME/config.yaml, or AZURE_STORAGE_CONNECTION_STRING",
        )
    url = f"https://{account}.blob.core.windows.net"
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        return client_class(url, credential={"account_name": account, "account_key": key})
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise StoreError(
            f"No credentials for the Azure account {account}.",
            hint="set AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING, or pip install "
            "azure-identity to use your Azure login",
        ) from None
    return client_class(url, credential=DefaultAzureCredential())
