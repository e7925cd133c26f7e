"""A write-only object store for the agent: every object goes up as an S3 POST-policy upload
(a browser-form upload) under one of the grants the laptop issued for the run.

A grant is a policy the laptop signed: uploads only under one key prefix, until an expiry.
The host gets no key that could sign anything else; it cannot read, list or delete. The
grants are bearer secrets: they live in the job's agent.json (mode 0600) and are never
logged or put in a status.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dstack.errors import StoreError
from dstack.storage.objects import ObjectStore, check_key
from dstack.storage.upload import Upload

TIMEOUT = 60.0  # seconds one request may take; a slow link still moves a 32 MB chunk


@dataclass(frozen=True)
class Grant:
    """The right to upload objects whose store key starts with ``scope``: POST ``fields`` and
    the file to ``url``; ``root`` is the store's own key prefix inside the bucket."""

    scope: str
    url: str
    fields: dict[str, str]
    root: str

    @classmethod
    def from_dict(cls, data: Any) -> Grant:
        """A grant from agent.json (written by the laptop, checked all the same)."""
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("scope", "url", "root")
        ):
            raise ValueError("a grant needs a scope, a url and a root")
        fields = data.get("fields")
        if not isinstance(fields, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
        ):
            raise ValueError("a grant's fields must map names to strings")
        return cls(data["scope"], data["url"], dict(fields), data["root"])

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "url": self.url, "fields": self.fields, "root": self.root}


class PostObjectStore(ObjectStore):
    """Uploads under grants; reads are not possible, so blobs are never skipped by asking
    (the agent remembers what it sent instead)."""

    remote = True
    parallelism = 4  # each upload holds its bytes in memory (at most one 32 MB chunk)

    def __init__(self, grants: list[Grant], url: str) -> None:
        self.grants = sorted(grants, key=lambda g: len(g.scope), reverse=True)
        self.url = url

    def _grant(self, key: str) -> Grant:
        check_key(key)
        for grant in self.grants:
            if key.startswith(grant.scope):
                return grant
        raise StoreError(f"The agent holds no grant to write '{key}' to {self.url}.")

    def _put_file(self, key: str, upload: Upload) -> None:
        with upload.verified() as body:  # a blob's bytes are checked against its name
            data = body.read(upload.size) if upload.size else b""
            if upload.sha256 is not None:
                body.read(1)  # reading to the end completes the check
        self.put_bytes(key, data or b"")

    def put_bytes(self, key: str, data: bytes) -> None:
        grant = self._grant(key)
        boundary = uuid.uuid4().hex
        fields = {**grant.fields, "key": f"{grant.root}{key}"}
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in fields.items()
        )
        file_head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body = head + file_head + data + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            grant.url,
            data=body,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                answer.read()
        except urllib.error.HTTPError as e:
            raise StoreError(
                f"{self.url} refused '{key}': HTTP {e.code} {_message(e.read())}",
                hint="the run's upload grant may have expired, or does not cover this key",
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise StoreError(f"Cannot reach {self.url} to write '{key}': {reason}.") from None

    # what a write-only store cannot do ---------------------------------------------------

    def exists(self, key: str) -> bool:
        return False  # unknown: uploading again is harmless (same key, same bytes)

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        return []

    def open_read(self, key: str) -> Iterator[bytes]:
        raise StoreError("The agent's grants allow no reading.")

    def get_bytes(self, key: str) -> bytes:
        raise StoreError("The agent's grants allow no reading.")

    def delete(self, key: str) -> None:
        raise StoreError("The agent's grants allow no deleting.")

    def ensure_bucket(self) -> list[str]:
        return []

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        raise StoreError("The agent's grants allow no reading.")

    def _write_if(self, key: str, data: bytes, version: str | None) -> bool:
        raise StoreError("The agent's grants allow no conditional writes.")


def _message(raw: bytes) -> str:
    """The <Message> of an S3 error answer (the store's own words), or its first line."""
    text = raw.decode("utf-8", "replace")
    start, end = text.find("<Message>"), text.find("</Message>")
    if 0 <= start < end:
        return text[start + 9 : end]
    return text.strip().splitlines()[0][:200] if text.strip() else ""
