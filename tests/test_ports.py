"""Ports and dev environments: $PORT_i reachable at the printed URL, here and through SSH tunnels
from pool hosts; JupyterLab answers through the tunnel; missing VS Code server is a clear error."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import Project, wait_for
from sshd import SSHServer
from test_ssh_run import pool_add

WEB = """
workflows:
  - name: web
    ports: 1
    commands: ['echo hello from the job > index.html', 'exec python3 -m http.server "$PORT_0" --bind 127.0.0.1']
"""


def read_url(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """The first http://localhost URL the command prints on stderr."""
    assert proc.stderr is not None
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            match = re.search(r"http://localhost:\d+\S*", line)
            if match:
                return match.group(0)
        assert proc.poll() is None, seen
    raise AssertionError(f"no URL printed; stderr so far:\n{seen}")


def http_get(url: str, timeout: float = 120) -> tuple[int, str]:
    def attempt() -> tuple[int, str] | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode(errors="replace")
        except OSError:
            return None

    result = wait_for(attempt, timeout=timeout, interval=0.5)
    assert isinstance(result, tuple)
    return result


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)


def test_local_port_is_reachable_at_the_printed_url(project: Project) -> None:
    project.workflows(WEB)
    proc = project.popen("run", "web")
    url = read_url(proc)
    assert http_get(url) == (200, "hello from the job\n")
    stop(proc)
    assert project.last_run()["status"] == "stopped"


def test_host_port_is_forwarded_and_attach_forwards_again(
    project: Project, sshd_hosts: list[SSHServer]
) -> None:
    pool_add(project, "h1", sshd_hosts[0])
    project.workflows(WEB)
    proc = project.popen("run", "web", "--host", "h1")
    url = read_url(proc)
    assert http_get(url) == (200, "hello from the job\n"), (
        "served on h1, reached through the tunnel"
    )
    stop(proc)

    project.dstack("run", "web", "--host", "h1", "-d", check=True)
    run = project.last_run()["name"]
    attach = project.popen("attach", run)
    assert http_get(read_url(attach)) == (200, "hello from the job\n")
    stop(attach)
    project.dstack("stop", run, check=True)


@pytest.mark.timeout(900)
def test_jupyter_lab_on_a_host_answers_through_the_tunnel(
    project: Project, sshd_local: SSHServer
) -> None:
    """On the loopback server: the namespace hosts have no route to the package index."""
    pool_add(project, "box", sshd_local)
    project.workflows("workflows:\n  - {name: notebooks, provider: lab}\n")
    proc = project.popen("run", "notebooks", "--host", "box")
    url = read_url(proc)
    assert "/lab?token=" in url
    token = url.split("token=")[1]
    status, body = http_get(url, timeout=600)
    assert status == 200 and "JupyterLab" in body
    run = project.last_run()["name"]
    logs = project.dstack("logs", run, check=True).stdout
    assert token not in logs, "the token is masked in the stored log"
    stop(proc)


def test_code_without_a_vs_code_server_says_what_to_install(project: Project) -> None:
    project.workflows("workflows:\n  - {name: ide, provider: code}\n")
    done = project.dstack("run", "ide")
    assert done.returncode == 1 and "neither code-server nor openvscode-server" in done.stderr
    assert "install code-server" in done.stderr


def test_code_starts_the_hosts_vs_code_server_behind_the_tunnel(
    project: Project, sshd_hosts: list[SSHServer]
) -> None:
    """No VS Code server can be installed here, so a stand-in `code-server` on the host's PATH
    checks the arguments dstack passes and answers HTTP like the real one would."""
    from pathlib import Path

    stand_in = Path("/usr/local/bin/code-server")
    stand_in.write_text(
        "#!/usr/bin/env python3\n"
        "import http.server, os, sys\n"
        "args = sys.argv[1:]\n"
        "assert args[:2] == ['--bind-addr', '127.0.0.1:' + os.environ['PORT_0']], args\n"
        "assert args[2:] == ['--auth', 'password', '.'] and os.environ['PASSWORD'], args\n"
        "print('stand-in code-server for', os.environ['PASSWORD'], flush=True)\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT_0'])), "
        "http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    stand_in.chmod(0o755)
    try:
        pool_add(project, "h2", sshd_hosts[1])
        project.workflows("workflows:\n  - {name: ide, provider: code}\n")
        proc = project.popen("run", "ide", "--host", "h2")
        url = read_url(proc)
        assert "/?tkn=" in url and http_get(url)[0] == 200
        token = url.split("tkn=")[1]
        assert token not in project.dstack("logs", project.last_run()["name"]).stdout
        stop(proc)
    finally:
        stand_in.unlink()
