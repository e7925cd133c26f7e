"""`dstack pool add|list|remove`: own servers reached over SSH."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dstack.cli.common import open_state, print_json, table

app = typer.Typer(
    help="Own servers that run jobs over SSH (nothing to install there but SSH, bash and python3).",
    no_args_is_help=True,
)


@app.command(help="Add a server: connect, pin its host key, probe CPUs, memory, disk, GPUs.")
def add(
    name: str = typer.Argument(..., metavar="NAME"),
    host: str = typer.Option(..., "--host", help="Address or host name"),
    port: int = typer.Option(22, "--port", help="SSH port"),
    user: str | None = typer.Option(None, "--user", help="Login user (default: yours)"),
    identity_file: Path | None = typer.Option(None, "--identity-file", help="Private key"),
    slots: int = typer.Option(1, "--slots", min=1, help="Jobs it may run at once"),
    repin: bool = typer.Option(False, "--repin", help="Accept a new host key and probe again"),
) -> None:
    from dstack.backends.ssh.pool import Pool, add_host
    from dstack.errors import SpecError
    from dstack.hostinfo import describe
    from dstack.spec.names import name_problem, shown
    from dstack.ssh.connect import HostAddress

    problem = name_problem(name)
    if problem:
        raise SpecError(f"The host name {shown(name)} {problem}.", hint="e.g. gpu1 or lab-a100")
    home, state = open_state()
    key = str(identity_file.expanduser().resolve()) if identity_file else None
    address = HostAddress(name, host, port, user, key)
    fingerprint = add_host(home, state, address, slots, replace=False, repin=repin)
    facts = Pool(state).host(name).facts
    sys.stderr.write(
        f"Added {address.label}: {describe(facts.resources)}, {facts.os}, "
        f"python {facts.python or 'missing'}.\nPinned host key {fingerprint}.\n"
    )


@app.command(
    "list", help="List the servers, their resources, and whether each is free, busy or unreachable."
)
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    from dstack.backends.ssh.pool import Pool, sync_config_hosts
    from dstack.backends.ssh.status import reachability
    from dstack.hostinfo import describe
    from dstack.runner.recover import recover

    home, state = open_state()
    recover(home, state)
    sync_config_hosts(home, state)
    pool = Pool(state)
    hosts = pool.hosts()
    reachable = reachability(hosts, home.root / "known_hosts")
    leases = pool.leases()
    rows = []
    for host in hosts:
        busy = [
            f"{lease.run_name}/{lease.workflow}" for lease in leases if lease.host_name == host.name
        ]
        status = (
            "unreachable" if reachable[host.name] else "busy" if len(busy) >= host.slots else "free"
        )
        rows.append(
            {**host.to_dict(), "status": status, "error": reachable[host.name], "jobs": busy}
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        sys.stderr.write("No servers yet. Add one: dstack pool add NAME --host HOST\n")
        return
    table(
        ["HOST", "ADDRESS", "RESOURCES", "STATUS"],
        [
            [r["name"], f"{r['host']}:{r['port']}", describe(h.facts.resources), r["status"]]
            for r, h in zip(rows, hosts, strict=True)
        ],
        shrink=("ADDRESS", "RESOURCES"),
    )


@app.command(help="Remove a server from the pool (refused while it runs a job).")
def remove(name: str = typer.Argument(..., metavar="NAME")) -> None:
    from dstack.backends.ssh.pool import Pool
    from dstack.ssh.connect import forget_host_key

    home, state = open_state()
    pool = Pool(state)
    address = pool.host(name).address
    pool.remove(name)
    forget_host_key(home.root / "known_hosts", address)
    sys.stderr.write(f"Removed {name} from the pool.\n")
