"""`dstack secrets add|list|delete`."""

from __future__ import annotations

import sys

import typer

from dstack.cli.common import age, print_json, table

app = typer.Typer(
    help="Secrets given to jobs as environment variables and masked in their logs.",
    no_args_is_help=True,
)


@app.command(
    help="Add or replace a secret; without VALUE it is read without echo, or from stdin "
    "(all of it: a multi-line key file works; one final newline is dropped)."
)
def add(
    name: str = typer.Argument(..., metavar="NAME"),
    value: str | None = typer.Argument(None, metavar="[VALUE]"),
) -> None:
    from dstack.home import open_home
    from dstack.secrets import Secrets

    if value is None:
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"Value of {name}: ")
        else:
            value = sys.stdin.read().removesuffix("\n")
    Secrets(open_home()).add(name, value)
    sys.stderr.write(f"Secret '{name}' saved; jobs get it as ${name}.\n")


@app.command("list", help="List secret names (values are never shown).")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    from dstack.home import open_home
    from dstack.secrets import Secrets

    items = Secrets(open_home()).listing()
    if as_json:
        print_json([{"name": name, "updated_at": when} for name, when in items])
    elif not items:
        sys.stderr.write("No secrets yet. Add one: dstack secrets add NAME\n")
    else:
        table(["SECRET", "UPDATED"], [[name, age(when)] for name, when in items])


@app.command(help="Delete a secret.")
def delete(name: str = typer.Argument(..., metavar="NAME")) -> None:
    from dstack.home import open_home
    from dstack.secrets import Secrets

    Secrets(open_home()).delete(name)
    sys.stderr.write(f"Deleted secret '{name}'.\n")
