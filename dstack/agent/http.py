"""One HTTP request of an agent's writer, with the store's refusals and silences turned into
StoreError (the agent retries those later)."""

from __future__ import annotations

import urllib.error
import urllib.request

from dstack.errors import StoreError

TIMEOUT = 60.0  # seconds one request may take; a slow link still moves a 32 MB chunk


def send(method: str, url: str, body: bytes, headers: dict[str, str], what: str) -> None:
    """``what``: the object, for messages (never the URL: it may carry a signature)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            answer.read()
    except urllib.error.HTTPError as e:
        raise StoreError(
            f"The store refused {what}: HTTP {e.code} {_message(e.read())}",
            hint="the run's upload grant may have expired, or does not cover this key",
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StoreError(f"Cannot reach the store to write {what}: {reason}.") from None


def _message(raw: bytes) -> str:
    """The <Message> of an S3 or Azure error answer (the store's own words), or its first line."""
    text = raw.decode("utf-8", "replace")
    start, end = text.find("<Message>"), text.find("</Message>")
    if 0 <= start < end:
        return text[start + 9 : end]
    return text.strip().splitlines()[0][:200] if text.strip() else ""
