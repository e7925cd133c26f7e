"""One home's state database and store, opened once for a command or an API call."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

from dstack.home import Home, open_home
from dstack.state.db import State

if TYPE_CHECKING:
    from dstack.backends.base import Context
    from dstack.storage.store import Store


def stderr_notes(text: str) -> None:
    """dstack's own progress lines, as the CLI prints them (stdout carries only job output)."""
    sys.stderr.write(f"dstack: {text}\n")


class Session:
    """DSTACK_HOME and its state; the store is opened on first use (many reads never need it,
    and a bucket store costs a client)."""

    def __init__(self, home: Home, state: State | None = None) -> None:
        self.home = home
        self.state = state if state is not None else State(home)
        self._store: Store | None = None

    @classmethod
    def open(cls) -> Session:
        """The home named by DSTACK_HOME (default ~/.dstack), created when missing."""
        return cls(open_home())

    @property
    def store(self) -> Store:
        if self._store is None:
            from dstack.storage.store import Store

            self._store = Store.open(self.home)
        return self._store

    def context(self) -> Context:
        """What backends work with, for the calls that reach a job's host."""
        from dstack.backends.base import Context

        return Context(self.home, self.state, self.store)

    def recover(self) -> None:
        """Runs whose supervisor died are finished or taken over before anything is read, so
        no view shows a run stuck as running."""
        from dstack.runner.recover import recover

        recover(self.home, self.state, self._store)

    def close(self) -> None:
        self.state.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
