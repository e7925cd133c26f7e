"""The provider interface and its registry (entry-point group `dstack.providers`)."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from dstack.errors import ProviderError, SpecError
from dstack.spec.jobspec import JobSpec
from dstack.spec.suggest import did_you_mean


@dataclass(frozen=True)
class HostContext:
    """Where the job runs: what the provider may need to know about the host."""

    venv_cache: str


class Provider(ABC):
    name: str = ""
    ports: int = 0  # ports the provider itself needs ($PORT_0...)
    masked: tuple[str, ...] = ()  # variables whose values never appear in logs (tokens)

    def url_path(self, env: dict[str, str]) -> str:
        """What to append to the forwarded URL of $PORT_0 (e.g. a login token)."""
        return ""

    def check(self, wf: JobSpec, repo: Path, file: str) -> None:
        """Refuse before anything starts: missing files or fields."""

    def require(self, value: object, field: str, wf: JobSpec, file: str, hint: str) -> None:
        """Refuse a workflow without the ``field`` this provider cannot run without."""
        if not value:
            raise SpecError(
                f"{file}: workflow '{wf.name}' (provider {self.name}) has no '{field}'.",
                hint=hint,
            )

    def check_host(self, wf: JobSpec, which: Callable[[str], bool]) -> None:
        """Refuse when the chosen host lacks what the job needs (an interpreter, a tool)."""

    def job_env(self, wf: JobSpec, files: dict[str, str]) -> dict[str, str]:
        """Extra environment for the job, from the files of its working copy (path -> sha256)."""
        return {}

    @abstractmethod
    def script(self, wf: JobSpec, host: HostContext) -> str:
        """The bash script body run in the job's working directory."""


def bash_lines(lines: list[str]) -> str:
    return "\n".join(lines)


def require_file(repo: Path, rel: str | None, field: str, wf: JobSpec, file: str) -> None:
    if rel is not None and not (repo / rel).is_file():
        raise ProviderError(
            f"{file}: workflow '{wf.name}', field '{field}': file '{rel}' does not "
            "exist in the repository.",
            hint="paths are relative to the repository root (the folder that holds .dstack/)",
        )


def quote_all(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


# The built-in providers, by name; plug-ins add theirs in the entry-point group
# `dstack.providers` (a built-in name always means the built-in).
BUILTIN = {
    "bash": "dstack.providers.bash:BashProvider",
    "python": "dstack.providers.python:PythonProvider",
    "lab": "dstack.providers.dev:JupyterProvider",
    "notebook": "dstack.providers.dev:NotebookProvider",
    "code": "dstack.providers.dev:CodeProvider",
}


def get_provider(name: str, file: str = ".dstack/workflows.yaml") -> Provider:
    """Look the provider up by name among the built-ins and installed plug-ins."""
    if name in BUILTIN:
        return _load(EntryPoint(name, BUILTIN[name], "dstack.providers"))
    plugins = {ep.name: ep for ep in entry_points(group="dstack.providers")}
    if name in plugins:
        return _load(plugins[name])
    known = sorted(set(BUILTIN) | set(plugins))
    raise SpecError(
        f"{file}: provider '{name}' is not available here; installed: {', '.join(known)}.",
        hint=did_you_mean(name, known)
        or "plug-ins register providers in the entry-point group 'dstack.providers'",
    )


def _load(entry: EntryPoint) -> Provider:
    provider_class: type[Provider] = entry.load()
    return provider_class()
