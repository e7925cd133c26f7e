"""Upload grants: what the laptop gives a host so that its agent can write one run's objects
to the store, and nothing else. Each kind of grant has its writer (WRITERS); a store that can
issue grants (ObjectStore.upload_grants) names the kind its writer understands.

Grants are bearer secrets: they live in the job's agent.json (mode 0600) and are never
logged or put in a status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dstack.agent import azblob, s3post


@dataclass(frozen=True)
class Grant:
    """The right to upload objects whose store key starts with ``scope`` until the grant
    expires: ``kind`` names how (its writer), ``url`` and ``fields`` are what the writer sends
    along, ``root`` is the store's own key prefix in the bucket."""

    scope: str
    url: str
    root: str
    kind: str = "s3-post"
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Grant:
        """A grant from agent.json (written by the laptop, checked all the same)."""
        texts = ("scope", "url", "root", "kind")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in texts):
            raise ValueError("a grant needs a scope, a url, a root and a kind")
        if data["kind"] not in WRITERS:
            raise ValueError(f"unknown kind of grant {data['kind']!r}")
        fields = data.get("fields", {})
        if not isinstance(fields, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
        ):
            raise ValueError("a grant's fields must map names to strings")
        return cls(**{k: data[k] for k in texts}, fields=dict(fields))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Writer = Callable[[Grant, str, bytes], None]  # (grant, the object's full name, its bytes)

WRITERS: dict[str, Writer] = {
    "s3-post": s3post.send,
    "az-sas": azblob.send,
    "gcs-post": s3post.send,  # a GCS V4 POST policy: the same browser-form upload
}
