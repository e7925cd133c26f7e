"""One HTTP request of an agent's writer or reader, with the store's refusals and silences
turned into StoreError (the agent retries those later).

A request may take SMALL_TIMEOUT seconds plus the time its body needs at MIN_RATE
(timeout_for): a store that stops answering (a frozen server, a link that drops packets)
holds a small write for seconds, not a minute, while a slow link still moves a 32 MB chunk.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from dstack.errors import StoreError

SMALL_TIMEOUT = 10.0  # seconds a request with a small body may take
MIN_RATE = 256 * 1024  # bytes a second a large body is given time for


def timeout_for(size: int) -> float:
    """Seconds a request sending ``size`` bytes may take (urllib's limit covers the whole
    send of a body, and each wait for the answer)."""
    return SMALL_TIMEOUT + size / MIN_RATE


def send(
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    what: str,
    done_if: Callable[[int, bytes], bool] | None = None,
) -> None:
    """``what``: the object, for messages (never the URL: it may carry a signature);
    ``done_if(status, answer)``: a refusal that means the object is already there."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_for(len(body))) as answer:
            answer.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        if done_if is not None and done_if(e.code, raw):
            return
        raise StoreError(
            f"The store refused {what}: HTTP {e.code} {_message(raw)}",
            hint="the run's upload grant may have expired, or does not cover this key",
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise StoreError(f"Cannot reach the store to write {what}: {_reason(e)}.") from None


def fetch(url: str, what: str, limit: int) -> bytes | None:
    """The object behind a signed GET ``url``; None when there is none (404). More than
    ``limit`` bytes is an error: what the agent reads is small and checked."""
    try:
        with urllib.request.urlopen(url, timeout=SMALL_TIMEOUT) as answer:
            data: bytes = answer.read(limit + 1)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise StoreError(
            f"The store refused to read {what}: HTTP {e.code} {_message(e.read())}",
            hint="the run's read link may have expired",
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise StoreError(f"Cannot reach the store to read {what}: {_reason(e)}.") from None
    if len(data) > limit:
        raise StoreError(f"{what} in the store is larger than {limit} bytes.")
    return data


def _reason(error: BaseException) -> object:
    return getattr(error, "reason", error)


def _message(raw: bytes) -> str:
    """The <Message> of an S3 or Azure error answer (the store's own words), or its first line."""
    text = raw.decode("utf-8", "replace")
    start, end = text.find("<Message>"), text.find("</Message>")
    if 0 <= start < end:
        return text[start + 9 : end]
    return text.strip().splitlines()[0][:200] if text.strip() else ""
