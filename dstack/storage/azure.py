"""Azure Blob Storage (azure-storage-blob): `az://container/prefix`.

The account comes from `AZURE_STORAGE_CONNECTION_STRING`, or from `store.account` with
`AZURE_STORAGE_KEY` (or azure-identity's default credential when it is installed). Large files
go up as blocks committed at the end, so a reader never sees a half-written blob.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dstack.errors import StoreError
from dstack.storage.objects import BucketObjectStore, Progress, Span, VerifiedReader, open_span

INSTALL_HINT = "install the Azure extra: pip install 'dstack[azure]'"


class AzureObjectStore(BucketObjectStore):
    def __init__(self, container: str, prefix: str, account: str | None = None) -> None:
        try:
            from azure.storage.blob import BlobServiceClient
        except ImportError:
            raise StoreError("az:// stores need azure-storage-blob.", hint=INSTALL_HINT) from None
        super().__init__("az", container, prefix)
        with self._errors("connect to"):
            service = _service(BlobServiceClient, account)
            self.container = service.get_container_client(container)

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

    def put_file(
        self,
        key: str,
        src: Path,
        progress: Progress | None = None,
        span: Span | None = None,
        sha256: str | None = None,
    ) -> None:
        done = 0

        def hook(current: int, total: int | None) -> None:
            nonlocal done
            if progress and current > done:
                progress(current - done)
                done = current

        from azure.core.exceptions import ResourceExistsError

        size = span[1] if span else src.stat().st_size
        with self._errors("upload to", key), open_span(src, span) as data:
            if sha256 is None:
                self.container.upload_blob(
                    self._key(key),
                    data,
                    length=size,
                    overwrite=True,
                    max_concurrency=8,
                    progress_hook=hook,
                )
                return
            # A blob is read in order and verified before it is committed (one put, or the
            # block list at the end); one already there is never replaced.
            with suppress(ResourceExistsError):
                self.container.upload_blob(
                    self._key(key),
                    VerifiedReader(data, size, sha256, str(src)),
                    length=size,
                    overwrite=False,
                    max_concurrency=1,
                    progress_hook=hook,
                )

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self.container.upload_blob(self._key(key), data, overwrite=True)

    def open_read(self, key: str) -> Iterator[bytes]:
        with self._errors("read", key):
            yield from self.container.download_blob(self._key(key)).chunks()

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            data: bytes = self.container.download_blob(self._key(key)).readall()
            return data

    def exists(self, key: str) -> bool:
        with self._errors("look up", key):
            return bool(self.container.get_blob_client(self._key(key)).exists())

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with self._errors("delete", key), suppress(ResourceNotFoundError):
            self.container.delete_blob(self._key(key))

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        cut = len(self._key(""))
        keys: list[str] = []
        with self._errors("list", prefix):
            for name in self.container.list_blob_names(name_starts_with=self._key(prefix)):
                keys.append(name[cut:])
                if limit is not None and len(keys) >= limit:
                    break
        return keys

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
