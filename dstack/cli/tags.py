"""`dstack tags list|add|delete`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dstack.cli.common import age, open_state, print_json, table

app = typer.Typer(
    help="Name runs (or local files) so workflows and teammates can reuse them.",
    no_args_is_help=True,
)


@app.command("list", help="List tags.")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    _, state = open_state()
    tags = state.tags()
    if as_json:
        print_json(
            [
                {
                    "name": t.name,
                    "run": t.run_name,
                    "created_at": t.created_at,
                    "artifacts": t.manifests,
                }
                for t in tags
            ]
        )
        return
    if not tags:
        sys.stderr.write("No tags yet. Tag a run: dstack tags add TAG -r RUN\n")
        return
    table(
        ["TAG", "RUN", "JOBS", "CREATED"],
        [[t.name, t.run_name, ", ".join(sorted(t.manifests)), age(t.created_at)] for t in tags],
        shrink=("JOBS",),
    )


@app.command(help="Tag a finished run (-r RUN), or local files as a new artifact set (-a PATH...).")
def add(
    tag: str = typer.Argument(..., metavar="TAG"),
    run_name: str | None = typer.Option(None, "-r", "--run", help="A finished run"),
    paths: list[Path] | None = typer.Option(
        None, "-a", "--artifact", help="A local file or folder (repeatable)"
    ),
) -> None:
    from dstack.errors import SpecError

    home, state = open_state()
    if bool(run_name) == bool(paths):
        raise SpecError(
            "Give either -r RUN or -a PATH (one or more), not both or neither.",
            hint="dstack tags add best -r brave-otter-12",
        )
    if run_name:
        from dstack.tags import tag_run

        tag_run(state, tag, run_name)
        sys.stderr.write(f"Tagged {run_name} as '{tag}'.\n")
        return
    from dstack.artifacts import upload_tagged
    from dstack.errors import DstackError
    from dstack.spec.files import find_repo_root
    from dstack.storage.store import Store

    try:
        base = find_repo_root(Path.cwd())
    except DstackError:
        base = Path.cwd().resolve()
    run = upload_tagged(state, Store.open(home), tag, base, list(paths or []))
    sys.stderr.write(f"Stored {len(paths or [])} path(s) as run {run}, tagged '{tag}'.\n")


@app.command(help="Delete a tag (the run and its artifacts stay).")
def delete(tag: str = typer.Argument(..., metavar="TAG")) -> None:
    _, state = open_state()
    state.delete_tag(tag)
    sys.stderr.write(f"Deleted tag '{tag}'.\n")
