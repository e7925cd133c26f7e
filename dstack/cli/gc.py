"""`dstack gc`: find and destroy cloud stacks whose run is no longer alive (its supervisor was
killed, its machine lost power, a teardown failed), so nothing keeps costing money."""

from __future__ import annotations

import sys
from typing import Any

import typer

from dstack.cli.common import age, print_json, table


def register(app: typer.Typer) -> None:
    app.command(
        help="Destroy the cloud stacks of runs that are no longer alive (a killed dstack, a "
        "failed teardown); --dry-run only lists them."
    )(gc)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List them, destroy nothing"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    from dstack.backends.teardown import teardown
    from dstack.cli.common import open_state
    from dstack.runner.recover import recover

    home, state = open_state()
    recover(home, state)  # a run whose supervisor died is finished (or resumed) first
    found = orphans(state)
    if as_json:
        print_json(found)
    elif found:
        table(
            ["STACK", "BACKEND", "STATUS", "CREATED", "WHY"],
            [
                [s["stack"], s["backend"], s["status"], age(s["created_at"]), s["why"]]
                for s in found
            ],
            shrink=("WHY", "STACK"),
        )
    else:
        sys.stderr.write("No stack is left behind.\n")
    if dry_run or not found:
        return

    def note(text: str) -> None:
        sys.stderr.write(f"dstack: {text}\n")

    failed = [s["stack"] for s in found if not teardown(home, state, s["stack"], note)]
    if failed:
        sys.stderr.write(f"Could not tear down: {', '.join(failed)} (see the errors above).\n")
        raise typer.Exit(1)
    sys.stderr.write(f"Tore down {len(found)} stack{'s' if len(found) != 1 else ''}.\n")


def orphans(state: Any) -> list[dict[str, Any]]:
    """The stacks whose run is gone or finished, with the reason."""
    from dstack.backends.ledger import Ledger

    found = []
    for stack in Ledger(state).left_behind():
        why = (
            f"its run is {state.run(stack.run_name).status}"
            if state.has_run(stack.run_name)
            else "its run was removed"
        )
        found.append(
            {
                "stack": stack.name,
                "run": stack.run_name,
                "job": stack.workflow,
                "backend": stack.backend,
                "status": stack.status,
                "created_at": stack.created_at,
                "why": why + (f"; {stack.error}" if stack.error else ""),
            }
        )
    return found
