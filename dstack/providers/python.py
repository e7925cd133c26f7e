"""The python provider: a script with args, in a venv built from `requirements` and cached on the host."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path

from dstack.errors import ProviderError
from dstack.providers.base import HostContext, Provider, bash_lines, quote_all, require_file
from dstack.scripts import command
from dstack.spec.jobspec import JobSpec


def interpreter(wf: JobSpec) -> str:
    return f"python{wf.python}" if wf.python else "python3"


class PythonEnvProvider(Provider):
    """A cached venv on the host from `requirements` plus ``packages``; `$PY` is its python."""

    packages: tuple[str, ...] = ()

    def check(self, wf: JobSpec, repo: Path, file: str) -> None:
        require_file(repo, wf.requirements, "requirements", wf, file)

    def check_host(self, wf: JobSpec, which: Callable[[str], bool]) -> None:
        if not which(interpreter(wf)):
            raise ProviderError(
                f"Workflow '{wf.name}' asks for Python {wf.python or '3'}, but '{interpreter(wf)}' "
                "is not on this host's PATH.",
                hint=f"install Python {wf.python or '3'} (e.g. with pyenv or apt), or remove "
                "'python:' to use python3",
            )

    def job_env(self, wf: JobSpec, files: dict[str, str]) -> dict[str, str]:
        """The venv's cache key: (requirements hash, python version, extra packages)."""
        if not wf.requirements and not self.packages:
            return {}
        material = f"{files.get(wf.requirements or '', '')}\0{interpreter(wf)}\0{self.packages}"
        return {"DSTACK_VENV_ID": hashlib.sha256(material.encode()).hexdigest()[:16]}

    def env_lines(self, wf: JobSpec, host: HostContext) -> list[str]:
        """The lines that set `$PY`: after building the cached venv (dstack/scripts/venv.sh)
        when there is something to install in it."""
        lines = ["set -e", *wf.setup]
        if not wf.requirements and not self.packages:
            return [*lines, f"PY={shlex.quote(interpreter(wf))}"]
        build = command(
            "venv.sh", host.venv_cache, interpreter(wf), wf.requirements or "", *self.packages
        )
        return [*lines, f"PY=$({build})"]


class PythonProvider(PythonEnvProvider):
    name = "python"

    def check(self, wf: JobSpec, repo: Path, file: str) -> None:
        hint = "add script: train.py (aliases: file, python_script)"
        self.require(wf.script, "script", wf, file, hint)
        require_file(repo, wf.script, "script", wf, file)
        super().check(wf, repo, file)

    def script(self, wf: JobSpec, host: HostContext) -> str:
        run = f'"$PY" -u {shlex.quote(wf.script or "")} {quote_all(list(wf.args))}'.rstrip()
        return bash_lines([*self.env_lines(wf, host), *wf.commands, run])
