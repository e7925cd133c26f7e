"""Ctrl-C reaching `dstack run` at an awkward moment: between starting a job on a host and
recording it. The supervisor only notes the signal and stops the run at its next turn; a
KeyboardInterrupt raised there used to leave the job running on the host, unseen."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from conftest import Project, wait_for
from sshd import SSHServer
from test_lifecycle import gone
from test_ssh_run import pool_add

# Run instead of every command the client sends (an authorized_keys forced command): the
# answer to job-started.sh (the job's pid, which dstack records) waits for the test's gate.
GATED = """#!/bin/bash
gate=$(dirname "$0")/gate
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp) exec /usr/lib/openssh/sftp-server ;;
  *" job-started.sh "*)
    touch "$gate/asked"
    for _ in $(seq 600); do [ -e "$gate/open" ] && break; sleep 0.05; done ;;
esac
exec bash -c "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture
def gated_host() -> Iterator[SSHServer]:
    """A loopback sshd of its own whose key runs GATED: its folder's gate/ holds `asked`
    once dstack waits for a job's pid, and the pid comes once the test creates `open`."""
    from sshd import make_server

    server = make_server("gated", "dstackgate")
    try:
        script = server.folder / "gated.sh"
        script.write_text(GATED)
        script.chmod(0o755)
        (server.folder / "gate").mkdir()
        (server.folder / "gate").chmod(0o777)  # the host's user writes `asked` there
        keys = server.folder / "authorized_keys"
        keys.write_text(f'command="{script}" {keys.read_text()}')
        yield server
    finally:
        server.stop()


def test_ctrl_c_while_a_job_is_being_recorded_stops_it_on_its_host(
    project: Project, gated_host: SSHServer
) -> None:
    pool_add(project, "gated", gated_host)
    project.workflows("""
        workflows:
          - name: long
            commands: ["echo started", "sleep 60"]
    """)
    proc = project.popen("run", "long", "--host", "gated")
    gate = gated_host.folder / "gate"
    wait_for((gate / "asked").exists, 60, what="dstack waiting for the job's pid")
    pids = list(gated_host.home.glob(".dstack/runs/*/*/long/pid"))
    assert len(pids) == 1 and pids[0].read_text().strip(), "the job runs on the host"
    pid = int(pids[0].read_text())
    proc.send_signal(signal.SIGINT)  # dstack is between starting the job and recording it
    (gate / "open").touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert wait_for(lambda: gone(pid), 15, what="the job stopped on its host")
    assert project.last_run()["status"] == "stopped"
