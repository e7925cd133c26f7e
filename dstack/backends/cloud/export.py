"""`dstack plan WORKFLOW --export DIR`: the plan's cloud hosts as a standalone Pulumi project,
so the standard `pulumi preview` and `pulumi up` run the very stacks dstack would, without it.

DIR gets `Pulumi.yaml`, a two-line `__main__.py` that runs the installed `stacks` program, and
one `Pulumi.<stack>.yaml` per job whose config object `host` is the job's HostSpec."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dstack.backends.base import Notes
from stacks.spec import HostSpec

PROJECT = (
    "name: dstack-host\n"
    "description: Hosts exported by `dstack plan --export` (one stack per job)\n"
    "runtime: python\n"
)
PROGRAM = (
    '"""Runs the `stacks` program of the installed dstack: one host from config `host`."""\n'
    "import runpy\n\n"
    'runpy.run_module("stacks", run_name="__main__")\n'
)


def export(folder: Path, hosts: list[HostSpec], blanks: dict[str, str]) -> list[Path]:
    """Write the project and a stack file per host; ``blanks`` maps a spec value that only
    stood in for something found at launch (the caller's address, the run's key) to ""."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Pulumi.yaml").write_text(PROJECT)
    (folder / "__main__.py").write_text(PROGRAM)
    written = []
    for host in hosts:
        data = {k: blanks.get(v, v) if isinstance(v, str) else v for k, v in asdict(host).items()}
        path = folder / f"Pulumi.{host.name}.yaml"
        # JSON is YAML: one object under the project's `host` key, as Config.require_object reads.
        path.write_text(json.dumps({"config": {"dstack-host:host": data}}, indent=2) + "\n")
        written.append(path)
    return written


def export_planned(
    folder: Path, hosts: list[HostSpec], allowed_cidr: str, ssh_public_key: str, notes: Notes
) -> None:
    """Write the hosts of a plan (with the preview's stand-ins), filling in the SSH range and
    key when given, and say what is left for the user to set before `pulumi up`."""
    from dataclasses import replace

    from dstack.backends.cloud.preview import CALLER, PREVIEW_KEY
    from dstack.errors import SpecError

    if allowed_cidr:
        try:
            hosts = [replace(h, allowed_cidr=allowed_cidr) for h in hosts]  # validated here
        except ValueError as e:
            raise SpecError(f"--allowed-cidr: {e}.", hint="e.g. 203.0.113.7/32") from None
    written = export(folder, hosts, {CALLER: "", PREVIEW_KEY: ssh_public_key})
    notes(f"Wrote {folder}/Pulumi.yaml and " + ", ".join(p.name for p in written) + ".")
    has_cidr = bool(allowed_cidr) or all(h.allowed_cidr != CALLER for h in hosts)
    if not has_cidr or not ssh_public_key:
        notes(
            "Before `pulumi up`, set what dstack fills in at launch: "
            + " and ".join(
                f"pulumi config set --path host.{name} VALUE"
                for name, given in (("allowed_cidr", has_cidr), ("ssh_public_key", ssh_public_key))
                if not given
            )
            + " (or pass --allowed-cidr / --ssh-key)."
        )
