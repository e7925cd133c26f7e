"""This machine: jobs run as its own processes, at no price, one at a time per job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dstack.backends.base import Backend, Unavailable, Waiting
from dstack.offer import Scope

if TYPE_CHECKING:
    from dstack.execution.base import Executor
    from dstack.offer import Offer
    from dstack.state.records import JobRecord

NAME = "local"


class LocalBackend(Backend):
    name = NAME
    own = True
    here = True
    settings_model = "dstack.backends.local.settings:LocalSettings"
    settings_by_default = True

    def enabled(self) -> bool:
        section = self.section()
        return section is None or bool(section["enabled"])

    def offers(self, scope: Scope, with_gpus: bool) -> list[Offer]:
        from dstack.hostinfo import local_resources
        from dstack.offer import Offer

        if scope.backend not in (None, NAME) or scope.host not in (None, NAME):
            return []
        if not self.enabled():
            return []
        resources = local_resources(self.ctx.home.root, with_gpus)
        return [Offer(NAME, NAME, "", resources, 0.0, own=True)]

    def acquire(self, job: JobRecord, offer: Offer) -> Executor | Waiting | Unavailable:
        return self.executor(NAME)

    def executor(self, host: str, patient: bool = True) -> Executor:
        from dstack.execution.local import LocalExecutor
        from dstack.storage.store import Store

        store = self.ctx.store or Store.open(self.ctx.home)
        executor = LocalExecutor(self.ctx.home, store)
        return executor
