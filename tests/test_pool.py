"""The pool of own servers against real OpenSSH servers: add, list, remove, pinned host keys."""

from __future__ import annotations

import json

from conftest import Project
from sshd import SSHServer


def add(project: Project, name: str, server: SSHServer, *extra: str):  # type: ignore[no-untyped-def]
    return project.dstack(*server.pool_add_args(name), *extra)


def test_add_probes_the_host_and_list_shows_it(
    project: Project, sshd_local: SSHServer, sshd_hosts: list[SSHServer]
) -> None:
    done = add(project, "loop", sshd_local)
    assert done.returncode == 0, done.stderr
    assert (
        f"Added loop ({sshd_local.user}@127.0.0.1:" in done.stderr
        and "Pinned host key SHA256:" in done.stderr
    )
    assert add(project, "h1", sshd_hosts[0]).returncode == 0
    hosts = {
        h["name"]: h
        for h in json.loads(project.dstack("pool", "list", "--json", check=True).stdout)
    }
    assert set(hosts) == {"loop", "h1"}
    loop = hosts["loop"]
    assert loop["status"] == "free" and loop["resources"]["cpus"] == int(sshd_local.ssh("nproc"))
    assert loop["resources"]["memory"] > 0 and loop["resources"]["gpus"] == []
    assert loop["python"] and loop["home"] == str(sshd_local.home)
    h1 = sshd_hosts[0]
    assert hosts["h1"]["host"] == h1.host and hosts["h1"]["home"] == str(h1.home)
    text = project.dstack("pool", "list", check=True).stdout
    assert "loop" in text and "free" in text and "CPUs" in text
    project.dstack("pool", "remove", "h1", check=True)
    assert [h["name"] for h in json.loads(project.dstack("pool", "list", "--json").stdout)] == [
        "loop"
    ]


def test_changed_host_key_is_refused_until_repinned(
    project: Project, tmp_path, sshd_local: SSHServer
) -> None:  # type: ignore[no-untyped-def]
    from sshd import make_server

    server = make_server("rekey", "dstacktest3")
    try:
        assert add(project, "box", server).returncode == 0
        server.new_host_key()
        listed = json.loads(project.dstack("pool", "list", "--json", check=True).stdout)
        assert listed[0]["status"] == "unreachable" and "host key" in listed[0]["error"]
        again = add(project, "box", server)
        assert again.returncode == 1 and "has changed since it was added" in again.stderr
        assert "--repin" in again.stderr and "Traceback" not in again.stderr
        assert add(project, "box", server, "--repin").returncode == 0
        assert json.loads(project.dstack("pool", "list", "--json").stdout)[0]["status"] == "free"
    finally:
        server.stop()


def test_unreachable_host_and_bad_key_are_clear_errors(
    project: Project, tmp_path, sshd_local: SSHServer
) -> None:  # type: ignore[no-untyped-def]
    from sshd import free_port, keygen

    closed = project.dstack(
        "pool", "add", "nowhere", "--host", "127.0.0.1", "--port", str(free_port())
    )
    assert (
        closed.returncode == 1
        and "is unreachable" in closed.stderr
        and "Traceback" not in closed.stderr
    )
    keygen(tmp_path / "stranger")
    refused = project.dstack(
        "pool",
        "add",
        "wrongkey",
        "--host",
        "127.0.0.1",
        "--port",
        str(sshd_local.port),
        "--user",
        sshd_local.user,
        "--identity-file",
        str(tmp_path / "stranger"),
    )
    assert refused.returncode == 1 and "refused the login" in refused.stderr
    assert json.loads(project.dstack("pool", "list", "--json").stdout) == []
    missing = project.dstack("pool", "remove", "nowhere")
    assert missing.returncode == 1 and "No host named 'nowhere'" in missing.stderr


def test_host_and_login_names_an_ssh_command_line_would_misread_are_refused(
    project: Project, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """rsync hands `user@host` to ssh: a leading '-' would be an option (ProxyCommand runs
    anything), blanks and quotes split it; refused before any connection is tried."""
    marker = tmp_path / "ran"
    proxy = f"-oProxyCommand=touch {marker}"
    for option, value in (
        ("--host", proxy),
        ("--host", "a b"),
        ("--host", "box;id"),
        ("--user", proxy),
        ("--user", "me;id"),
        ("--user", "it's"),
    ):
        args = ["--host", "127.0.0.1", "--user", "me"]
        args[args.index(option) + 1] = value
        done = project.dstack("pool", "add", "box", *args, "--port", "1")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        what = "is not a host name or address" if option == "--host" else "is not a login name"
        assert what in done.stderr and repr(value) in done.stderr
    assert not marker.exists()
    assert json.loads(project.dstack("pool", "list", "--json").stdout) == []


def test_domain_logins_and_ipv6_zones_are_names() -> None:
    from dstack.ssh.connect import HostAddress

    address = HostAddress("ad", "fe80::1%eth0", 22, "ann@corp.example")
    assert address.user == "ann@corp.example" and address.host == "fe80::1%eth0"
