"""The Azure Blob writer: an object goes up as one Put Blob under a SAS token.

The laptop signed the tokens (AzureObjectStore.upload_grants): a token for one blob, for a key
that is rewritten (a job's status, its manifest), or a token for the container that may only
create blobs, for keys written once (content-addressed blobs, log parts): Azure refuses to
replace a blob that exists under it (403 AuthorizationPermissionMismatch). Such a key already
holds what this agent would send (a blob's name is its hash; a log part goes again only when
an answer was lost), so that refusal means the object is there. No token allows reading,
listing or deleting.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from typing import TYPE_CHECKING

from dstack.agent import http

if TYPE_CHECKING:
    from dstack.agent.grants import Grant

VERSION = "2021-08-06"  # the REST version asked for when the token names none (its `sv`)
THERE_ALREADY = "AuthorizationPermissionMismatch"  # create-only token, blob exists


def send(grant: Grant, name: str, data: bytes) -> None:
    """PUT ``name`` under the grant's token. ``grant.fields``: ``sas`` (the token, a query
    string) and ``once`` ("1" for a create-only token)."""
    sas = grant.fields.get("sas", "")
    version = urllib.parse.parse_qs(sas).get("sv", [VERSION])[0]
    url = f"{grant.url}/{urllib.parse.quote(name, safe='/')}?{sas}"
    headers = {
        "x-ms-blob-type": "BlockBlob",
        "x-ms-version": version,
        "Content-Type": "application/octet-stream",
        # Azure checks the bytes it got against this (a checksum, not security)
        "Content-MD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
    }
    what = f"'{name}'"  # never the URL: it carries the token
    once = grant.fields.get("once") == "1"
    http.send("PUT", url, data, headers, what, done_if=_there_already if once else None)


def _there_already(code: int, answer: bytes) -> bool:
    """A create-only token's refusal of a blob that exists: written before, never replaced."""
    return (code == 403 and THERE_ALREADY.encode() in answer) or code == 409
