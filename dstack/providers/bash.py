"""The bash provider: `setup` then `commands`, failing on the first failing line."""

from __future__ import annotations

from pathlib import Path

from dstack.providers.base import HostContext, Provider, bash_lines
from dstack.spec.jobspec import JobSpec


class BashProvider(Provider):
    name = "bash"

    def check(self, wf: JobSpec, repo: Path, file: str) -> None:
        self.require(wf.commands, "commands", wf, file, hint="add commands:\n  - echo hello")

    def script(self, wf: JobSpec, host: HostContext) -> str:
        return bash_lines(["set -e", *wf.setup, *wf.commands])
