"""Destroying a stack so that nothing can interrupt it halfway.

The destroy runs in a process of its own session (`python -m dstack.backends.cloud.teardown
STACK [--team]`): Ctrl-C at the terminal does not reach it, and it finishes even when the
dstack process that started it is killed. Only once the stack is destroyed and removed is its
row deleted; a failed teardown leaves the row marked ``leaked`` for `dstack gc`, with the
engine's error. ``--team``: another home's stack, found in the shared store (its record says
what it is; this home has no row of it).

Where the store is shared (dstack.backends.cloud.team), a home first claims the stack's record,
so that two homes never destroy one stack at once; a home that finds another one on it (its
claim, or the engine's lock of the stack) waits for that one to finish, up to OTHER_WAIT, and
is then done: someone else's work in progress is not a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from dstack.backends.cloud.ledger import Ledger
from dstack.home import Home
from dstack.state.db import State
from dstack.storage.store import Store

GONE, FAILED, ELSEWHERE = 0, 1, 3  # the child's exit codes
OTHER_WAIT = 300.0  # seconds to wait for another home (or process) to finish with a stack
LOOK_EVERY = 1.0


def teardown(home: Home, state: State, name: str, notes: Callable[[str], None]) -> bool:
    """Destroy and remove this home's stack ``name``, waiting through Ctrl-C; True when it
    is gone."""
    if Ledger(state).get(name) is None:
        return True
    code = _run_child(home, name, [], notes)
    if Ledger(state).get(name) is None:
        return True
    if code == ELSEWHERE:
        notes(f"{name} is being torn down elsewhere: `dstack gc` looks at it again")
    else:
        notes(f"{name} could not be torn down: `dstack gc` tries again")
    return False


def teardown_team(home: Home, name: str, notes: Callable[[str], None]) -> bool:
    """Destroy another home's stack ``name`` (its run is over); True when it is gone, by this
    home's hands or another's."""
    code = _run_child(home, name, ["--team"], notes)
    if code == ELSEWHERE:
        notes(f"{name} is being torn down elsewhere: `dstack gc` looks at it again")
    elif code != GONE:
        notes(f"{name} could not be torn down: `dstack gc` tries again")
    return code == GONE


def _run_child(home: Home, name: str, extra: list[str], notes: Callable[[str], None]) -> int:
    notes(f"tearing down {name}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack.backends.cloud.teardown", name, *extra],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "DSTACK_HOME": str(home.root)},
    )
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            notes(f"still tearing down {name}: it goes on even if dstack is killed")


# the child's work ---------------------------------------------------------------------------


def destroy_recorded(home: Home, state: State, name: str) -> int:
    """Destroy this home's stack and remove it, then forget it (and the run's key and host
    key once the run has no stack left)."""
    from dstack.backends.cloud import team
    from dstack.errors import DstackError

    ledger = Ledger(state)
    record = ledger.get(name)
    if record is None:
        return GONE
    ledger.update(name, status="destroying")
    try:
        store = team_store(home)
        claimed = _claim(store, home, name) if store is not None else "absent"
    except DstackError as e:  # the store does not answer: gc tries again
        ledger.update(name, status="leaked", error=e.message.splitlines()[-1])
        _say(f"{name}: {e.message}")
        return FAILED
    if store is not None:
        if claimed == "gone":
            _say(f"{name} was torn down by another home")
            forget_stack(home, ledger, name, record.run_name)
            team.forget(store, name)  # its tombstone: noted
            return GONE
        if claimed == "busy":
            ledger.update(name, status="leaked", error="another home is tearing it down")
            return ELSEWHERE
    try:
        code = _destroy(home, store, name, fallback=True)
    except DstackError as e:  # the row stays for `dstack gc`, with the reason
        ledger.update(name, status="leaked", error=e.message.splitlines()[-1])
        _say(f"{name}: {e.message}")
        code = FAILED
    except BaseException as e:  # unexpected: still left for `dstack gc`, then told in full
        ledger.update(name, status="leaked", error=f"{type(e).__name__}: {e}".splitlines()[-1])
        if store is not None and claimed == "mine":
            team.release(store, name, home.id)
        raise
    if code != GONE:
        if code == ELSEWHERE:
            ledger.update(name, status="leaked", error="its stack is locked by another update")
        if store is not None and claimed == "mine":
            team.release(store, name, home.id)
        return code
    if store is not None and claimed == "mine":
        team.destroyed(store, name, home.id, own=True)
    forget_stack(home, ledger, name, record.run_name)
    return GONE


def destroy_team(home: Home, name: str) -> int:
    """Destroy another home's stack, known from its record in the shared store, and leave
    a tombstone there for that home."""
    from dstack.backends.cloud import team
    from dstack.errors import CloudError, DstackError

    store = team_store(home)
    if store is None:
        raise CloudError(f"Stack {name} is another home's, and this home's store is not shared.")
    claimed = _claim(store, home, name)
    if claimed in ("gone", "absent"):
        _say(f"{name} was torn down by another home")
        return GONE
    if claimed == "busy":
        return ELSEWHERE
    try:
        code = _destroy(home, store, name, fallback=False)
    except DstackError as e:
        _say(f"{name}: {e.message}")
        code = FAILED
    except BaseException:
        team.release(store, name, home.id)
        raise
    if code == GONE:
        team.destroyed(store, name, home.id, own=False)
    else:
        team.release(store, name, home.id)
    return code


def team_store(home: Home) -> Store | None:
    """The store, when the run stacks are shared through it."""
    from dstack.backends.cloud.workspace import shared_store

    return Store.open(home) if shared_store(home) else None


def _claim(store: Store, home: Home, name: str) -> str:
    """mine, absent (no record: destroy as before records), gone (another home destroyed it)
    or busy (another home is still on it after OTHER_WAIT)."""
    from dstack.backends.cloud import team
    from dstack.tags import who

    deadline, told = time.monotonic() + OTHER_WAIT, False
    while True:
        found = team.claim(store, name, home.id, who())
        if found.outcome != "busy":
            return "gone" if found.outcome == "destroyed" else found.outcome
        if not told:
            assert found.record is not None
            _say(f"{found.record.by_owner or 'another home'} is tearing down {name}; waiting")
            told = True
        if time.monotonic() > deadline:
            return "busy"
        time.sleep(LOOK_EVERY)


def _destroy(home: Home, store: Store | None, name: str, fallback: bool) -> int:
    """Destroy and remove the stack where its state is; GONE, or ELSEWHERE when another
    update kept it locked for OTHER_WAIT. ``fallback``: also look in this home's own backend
    (a stack recorded before its state moved to the bucket)."""
    from dstack.backends.cloud.automation import StackBusy, destroy, select_stack
    from dstack.backends.cloud.workspace import own_backend, state_backend

    backend = state_backend(home, store)
    deadline, told = time.monotonic() + OTHER_WAIT, False
    while True:
        try:
            stack = select_stack(home, name, backend)
            if stack is None and fallback and backend.url != own_backend(home).url:
                stack = select_stack(home, name, own_backend(home))
            if stack is not None:
                destroy(stack, _say)
            return GONE
        except StackBusy as e:
            if not told:
                _say(f"{e.message.splitlines()[0]} Waiting for it.")
                told = True
            if time.monotonic() > deadline:
                _say(f"{name}: {e.message}\nHint: {e.hint}")
                return ELSEWHERE
            time.sleep(LOOK_EVERY)


def forget_stack(home: Home, ledger: Ledger, name: str, run: str) -> None:
    """The stack is gone: its row, its host key, and the run's key once no stack needs it."""
    from dstack.backends.cloud.access import forget_run_key, known_hosts

    ledger.forget(name)
    known_hosts(home, name).unlink(missing_ok=True)
    if not ledger.all(run):
        forget_run_key(home, run)


def _say(text: str) -> None:
    sys.stderr.write(f"dstack: {text}\n")
    sys.stderr.flush()


def main() -> None:
    from dstack import logs_setup
    from dstack.errors import DstackError
    from dstack.home import open_home

    logs_setup.configure(debug=os.environ.get("DSTACK_DEBUG") == "1")
    try:
        home = open_home()
        if sys.argv[2:] == ["--team"]:
            code = destroy_team(home, sys.argv[1])
        else:
            code = destroy_recorded(home, State(home), sys.argv[1])
    except DstackError as e:  # the row stays; the parent says `dstack gc` tries again
        _say(e.message)
        code = FAILED
    except Exception as e:  # this process's top: one line naming the log with the traceback
        sys.stderr.write(logs_setup.unexpected_line(e, logs_setup.record_unexpected(e)) + "\n")
        code = FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
