"""The stacks dstack made, as the cloud backend sees them: recorded before anything exists in a
cloud and forgotten only once the stack is destroyed, so a crash at any step leaves a record
that `dstack gc` finds. A stack holds one of its backend's ``max_instances`` places from its
claim until it is forgotten; the rows and their statuses live in `dstack.state.stacks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dstack.state import stacks
from dstack.state.db import UNSET, State, Unset
from dstack.state.stacks import StackRecord as StackRecord


class Ledger:
    def __init__(self, state: State) -> None:
        self.state = state

    def record(
        self, name: str, run: str, workflow: str, spec: dict[str, Any], offer: dict[str, Any]
    ) -> None:
        stacks.record(
            self.state,
            name=name,
            run_name=run,
            workflow=workflow,
            backend=spec["backend"],
            spec=spec,
            offer=offer,
        )

    def claim(self, name: str, max_instances: int) -> bool:
        """Move a planned stack to ``creating`` if its backend has a free place."""
        return stacks.claim(self.state, name=name, max_instances=max_instances)

    def update(
        self,
        name: str,
        *,
        status: str | Unset = UNSET,
        outputs: Mapping[str, Any] | None | Unset = UNSET,
        error: str | None | Unset = UNSET,
    ) -> None:
        """Set the given fields of the stack (those left out keep their values)."""
        stacks.update(self.state, name=name, status=status, outputs=outputs, error=error)

    def forget(self, name: str) -> None:
        stacks.forget(self.state, name=name)

    def get(self, name: str) -> StackRecord | None:
        return stacks.get(self.state, name=name)

    def of_job(self, run: str, workflow: str) -> StackRecord | None:
        return stacks.of_job(self.state, run_name=run, workflow=workflow)

    def left_behind(self) -> list[StackRecord]:
        """Stacks whose run has ended or is gone: what `dstack gc` tears down."""
        return stacks.left_behind(self.state)

    def all(self, run: str | None = None) -> list[StackRecord]:
        return stacks.listed(self.state, run_name=run)
