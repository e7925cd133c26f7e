"""The python provider: a script with args, in a venv built from `requirements` and cached on the host."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path

from dstack.errors import ProviderError, SpecError
from dstack.providers.base import HostContext, Provider, bash_lines, quote_all, require_file
from dstack.spec.jobspec import JobSpec


def interpreter(wf: JobSpec) -> str:
    return f"python{wf.python}" if wf.python else "python3"


class PythonProvider(Provider):
    name = "python"

    def check(self, wf: JobSpec, repo: Path, file: str) -> None:
        if not wf.script:
            raise SpecError(
                f"{file}: workflow '{wf.name}' (provider python) has no 'script'.",
                hint="add script: train.py (aliases: file, python_script)",
            )
        require_file(repo, wf.script, "script", wf, file)
        require_file(repo, wf.requirements, "requirements", wf, file)

    def check_host(self, wf: JobSpec, which: Callable[[str], bool]) -> None:
        if not which(interpreter(wf)):
            raise ProviderError(
                f"Workflow '{wf.name}' asks for Python {wf.python}, but '{interpreter(wf)}' is not "
                "on this host's PATH.",
                hint=f"install Python {wf.python} (e.g. with pyenv or apt), or remove 'python:' "
                "to use python3",
            )

    def job_env(self, wf: JobSpec, files: dict[str, str]) -> dict[str, str]:
        """The venv's cache key: (requirements hash, python version)."""
        if not wf.requirements:
            return {}
        material = f"{files.get(wf.requirements, '')}\0{interpreter(wf)}"
        return {"DSTACK_VENV_ID": hashlib.sha256(material.encode()).hexdigest()[:16]}

    def script(self, wf: JobSpec, host: HostContext) -> str:
        python = interpreter(wf)
        run = f'"$PY" -u {shlex.quote(wf.script or "")} {quote_all(list(wf.args))}'.rstrip()
        lines = ["set -e", *wf.setup]
        if not wf.requirements:
            return bash_lines([*lines, f"PY={python}", *wf.commands, run])
        venv = f'{host.venv_cache}/"$DSTACK_VENV_ID"'
        lines += [
            f"mkdir -p {host.venv_cache}",
            f"exec 9>{venv}.lock",
            "flock 9",
            f"if [ ! -f {venv}/.dstack-ready ]; then",
            f'  echo "dstack: building the Python environment from {wf.requirements}"',
            f"  rm -rf {venv}",
            f"  {python} -m venv {venv}",
            f"  {venv}/bin/python -m pip install --disable-pip-version-check -q "
            f"-r {shlex.quote(wf.requirements)}",
            f"  touch {venv}/.dstack-ready",
            "fi",
            "exec 9>&-",
            f"PY={venv}/bin/python",
        ]
        return bash_lines([*lines, *wf.commands, run])
