"""Destroying a job's stack so that nothing can interrupt it halfway.

The destroy runs in a process of its own session (`python -m dstack.backends.cloud.teardown STACK`):
Ctrl-C at the terminal does not reach it, and it finishes even when the dstack process that
started it is killed. Only once the stack is destroyed and removed is its row deleted; a
failed teardown leaves the row marked ``leaked`` for `dstack gc`, with the engine's error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from dstack.backends.cloud.ledger import Ledger
from dstack.home import Home
from dstack.state.db import State


def teardown(home: Home, state: State, name: str, notes: Callable[[str], None]) -> bool:
    """Destroy and remove stack ``name``, waiting through Ctrl-C; True when it is gone."""
    ledger = Ledger(state)
    if ledger.get(name) is None:
        return True
    notes(f"tearing down {name}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack.backends.cloud.teardown", name],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "DSTACK_HOME": str(home.root)},
    )
    while True:
        try:
            proc.wait()
            break
        except KeyboardInterrupt:
            notes(f"still tearing down {name}: it goes on even if dstack is killed")
    record = ledger.get(name)
    if record is not None:
        notes(f"{name} could not be torn down: `dstack gc` tries again")
    return record is None


def destroy_recorded(home: Home, state: State, name: str) -> int:
    """The child's work: destroy the stack and remove it, then forget it (and the run's key
    and host key once the run has no stack left)."""
    from dstack.backends.cloud.access import forget_run_key, known_hosts
    from dstack.backends.cloud.automation import destroy, select_stack
    from dstack.errors import DstackError

    ledger = Ledger(state)
    record = ledger.get(name)
    if record is None:
        return 0
    ledger.update(name, status="destroying")
    try:
        stack = select_stack(home, name)
        if stack is not None:
            destroy(stack, _say)
    except DstackError as e:  # the row stays for `dstack gc`, with the reason
        ledger.update(name, status="leaked", error=e.message.splitlines()[-1])
        _say(f"{name}: {e.message}")
        return 1
    except BaseException as e:  # unexpected: still left for `dstack gc`, then told in full
        ledger.update(name, status="leaked", error=f"{type(e).__name__}: {e}".splitlines()[-1])
        raise
    ledger.forget(name)
    known_hosts(home, name).unlink(missing_ok=True)
    if not ledger.all(record.run_name):
        forget_run_key(home, record.run_name)
    return 0


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
        code = destroy_recorded(home, State(home), sys.argv[1])
    except DstackError as e:  # the row stays; the parent says `dstack gc` tries again
        _say(e.message)
        code = 1
    except Exception as e:  # this process's top: one line naming the log with the traceback
        sys.stderr.write(logs_setup.unexpected_line(e, logs_setup.record_unexpected(e)) + "\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
