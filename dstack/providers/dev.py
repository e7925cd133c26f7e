"""Dev environments on the host, reached through a forwarded port: Jupyter Lab, Jupyter
Notebook and VS Code server. They run until Ctrl-C or `dstack stop`."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from dstack.errors import ProviderError
from dstack.providers.base import HostContext, Provider, bash_lines
from dstack.providers.python import PythonEnvProvider
from dstack.scripts import command
from dstack.spec.jobspec import JobSpec


class JupyterProvider(PythonEnvProvider):
    """`lab`: JupyterLab in a cached venv (with the workflow's requirements), token-protected."""

    name = "lab"
    packages = ("jupyterlab",)
    module = "jupyterlab"
    page = "lab"
    ports = 1
    masked = ("JUPYTER_TOKEN",)

    def job_env(self, wf: JobSpec, files: dict[str, str]) -> dict[str, str]:
        return {**super().job_env(wf, files), "JUPYTER_TOKEN": secrets.token_hex(16)}

    def url_path(self, env: dict[str, str]) -> str:
        return f"/{self.page}?token={env['JUPYTER_TOKEN']}"

    def script(self, wf: JobSpec, host: HostContext) -> str:
        serve = (
            f'exec "$PY" -m {self.module} --no-browser --ip=127.0.0.1 --port="$PORT_0" '
            '--ServerApp.token="$JUPYTER_TOKEN" --ServerApp.root_dir=. '
            "--ServerApp.port_retries=0"
        )
        return bash_lines([*self.env_lines(wf, host), *wf.commands, serve])


class NotebookProvider(JupyterProvider):
    name = "notebook"
    packages = ("notebook",)
    module = "notebook"
    page = "tree"


CODE_SERVERS = ("code-server", "openvscode-server")


class CodeProvider(Provider):
    """`code`: a VS Code server the host already has (dstack installs nothing system-wide)."""

    name = "code"
    ports = 1
    masked = ("CODE_TOKEN",)

    def check_host(self, wf: JobSpec, which: Callable[[str], bool]) -> None:
        if not any(which(server) for server in CODE_SERVERS):
            raise ProviderError(
                f"Workflow '{wf.name}' (provider code) needs a VS Code server on the host, and "
                "neither code-server nor openvscode-server is on its PATH.",
                hint="install code-server there (https://coder.com/docs/code-server/install), "
                "or use provider lab",
            )

    def job_env(self, wf: JobSpec, files: dict[str, str]) -> dict[str, str]:
        return {"CODE_TOKEN": secrets.token_hex(16)}

    def url_path(self, env: dict[str, str]) -> str:
        return f"/?tkn={env['CODE_TOKEN']}"

    def script(self, wf: JobSpec, host: HostContext) -> str:
        serve = "exec " + command("code-server.sh")
        return bash_lines(["set -e", *wf.setup, *wf.commands, serve])
