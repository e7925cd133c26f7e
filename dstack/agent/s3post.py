"""The S3 writer: an object goes up as a POST-policy upload (a browser-form upload).

The laptop signed the policy (S3ObjectStore.upload_grants): uploads only of keys that start
with one prefix, until an expiry. The host holds no key that could sign anything else: it
cannot read, list or delete, and the server refuses any key outside the prefix.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from dstack.agent import http

if TYPE_CHECKING:
    from dstack.agent.grants import Grant


def send(grant: Grant, name: str, data: bytes) -> None:
    boundary = uuid.uuid4().hex
    fields = {**grant.fields, "key": name}
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    )
    file_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + file_head + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    http.send("POST", grant.url, body, headers, f"'{name}'")
