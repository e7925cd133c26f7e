"""The one way dstack retries: an action tried again after failures it can outlive (a dropped
connection, a busy database, a host still booting), on top of tenacity.

Each wait is ``wait`` seconds, doubled after each failure up to ``max_wait`` when that is given.
No wait is begun that would end past ``give_up_after`` seconds from the first try, and no try
is made past ``attempts``: then the last failure is raised as it was. The first try runs before
tenacity is imported, so a quick path that succeeds at once (opening the state) pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(
    action: Callable[[], T],
    *,
    retry_on: Callable[[BaseException], bool],
    wait: float,
    max_wait: float | None = None,
    give_up_after: float | None = None,
    attempts: int | None = None,
    after_failure: Callable[[BaseException], None] | None = None,
) -> T:
    """``action()``'s result, trying again while ``retry_on`` says its failure may pass;
    ``after_failure`` sees each such failure (to drop a broken connection, say)."""
    started = time.monotonic()
    try:
        return action()
    except BaseException as error:
        if not retry_on(error):
            raise
        first = error
    import tenacity

    replayed = False

    def attempt() -> T:
        """tenacity's first attempt is the one already made: its failure, raised again."""
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first
        return action()

    stop: tenacity.stop.stop_base = tenacity.stop_never
    if give_up_after is not None:
        stop = stop | tenacity.stop_before_delay(give_up_after - (time.monotonic() - started))
    if attempts is not None:
        stop = stop | tenacity.stop_after_attempt(attempts)
    waits: tenacity.wait.wait_base = (
        tenacity.wait_fixed(wait)
        if max_wait is None
        else tenacity.wait_exponential(multiplier=wait, max=max_wait)
    )

    def failed(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if after_failure is not None and error is not None:
            after_failure(error)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_on),
        stop=stop,
        wait=waits,
        after=failed,
        reraise=True,
    )
    return retrying(attempt)
