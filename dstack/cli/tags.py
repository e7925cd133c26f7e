"""`dstack tags list|add|delete|history`: tags live in the store, shared with teammates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dstack.cli.common import age, open_state, print_json, table

if TYPE_CHECKING:
    from dstack.tags import TagBook

app = typer.Typer(
    help="Name runs (or local files) so workflows and teammates can reuse them.",
    no_args_is_help=True,
)
JSON = typer.Option(False, "--json", help="Print JSON")


def _book() -> TagBook:
    from dstack.sharing import open_tags
    from dstack.storage.store import Store

    home, state = open_state()
    return open_tags(state, Store.open(home))


@app.command("list", help="List tags.")
def list_(as_json: bool = JSON) -> None:
    tags = _book().all()
    if as_json:
        print_json(
            [
                {
                    "name": t.tag,
                    "run": t.run_name,
                    "created_at": t.created_at,
                    "by": t.by,
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
        [[t.tag, t.run_name, ", ".join(sorted(t.manifests)), age(t.created_at)] for t in tags],
        shrink=("JOBS",),
    )


@app.command(help="Tag a finished run (-r RUN), or local files as a new artifact set (-a PATH...).")
def add(
    tag: str = typer.Argument(..., metavar="TAG"),
    run_name: str | None = typer.Option(None, "-r", "--run", help="A finished run"),
    paths: list[Path] | None = typer.Option(
        None, "-a", "--artifact", help="A local file or folder (repeatable)"
    ),
    move: bool = typer.Option(
        False, "--move", help="Move an existing tag here (its history keeps where it was)"
    ),
) -> None:
    from dstack.errors import SpecError
    from dstack.storage.store import Store
    from dstack.tags import check_tag

    check_tag(tag)  # before anything is uploaded or recorded
    home, state = open_state()
    store = Store.open(home)
    if bool(run_name) == bool(paths):
        raise SpecError(
            "Give either -r RUN or -a PATH (one or more), not both or neither.",
            hint="dstack tags add best -r brave-otter-12",
        )
    if run_name:
        from dstack.sharing import tag_run

        tag_run(state, store, tag, run_name, move)
        sys.stderr.write(f"Tagged {run_name} as '{tag}'.\n")
        return
    from dstack.artifacts import upload_tagged
    from dstack.cli.progress import transfer_bar
    from dstack.errors import DstackError
    from dstack.spec.files import find_repo_root
    from dstack.storage.manifest import StatCache

    try:
        base = find_repo_root(Path.cwd())
    except DstackError:
        base = Path.cwd().resolve()
    cache = StatCache.load(home.hash_cache)
    with transfer_bar("uploading") as progress:
        run = upload_tagged(state, store, tag, base, list(paths or []), move, cache, progress)
    cache.save()
    sys.stderr.write(
        f"Stored {len(paths or [])} path(s) in {store.url} as run {run}, tagged '{tag}'.\n"
    )


@app.command(help="Delete a tag (the run and its artifacts stay; the history keeps it).")
def delete(tag: str = typer.Argument(..., metavar="TAG")) -> None:
    _book().delete(tag)
    sys.stderr.write(f"Deleted tag '{tag}'.\n")


@app.command(help="Show every change of a tag: which run it named, when, and who moved it.")
def history(tag: str = typer.Argument(..., metavar="TAG"), as_json: bool = JSON) -> None:
    from dstack.errors import NotFoundError

    events = _book().history(tag)
    if not events:
        raise NotFoundError(f"No tag named '{tag}' (it has no history).")
    if as_json:
        print_json([{k: v for k, v in e.__dict__.items() if k != "key"} for e in events])
        return
    table(
        ["WHEN", "ACTION", "RUN", "BY"],
        [[age(e.created_at), e.action, e.run_name, e.by] for e in reversed(events)],
        shrink=("BY",),
    )
