"""`dstack artifacts list|download RUN|:TAG`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dstack.cli.common import open_state, print_json, table

app = typer.Typer(
    help="List and download the artifacts of a run (RUN) or a tagged run (:TAG).",
    no_args_is_help=True,
)
REF = typer.Argument(..., metavar="RUN|:TAG", help="A run name, or :TAG for the tagged run")


@app.command("list", help="List the files a run saved, per job.")
def list_(ref: str = REF, as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    from dstack.artifacts import load_all
    from dstack.runner.recover import recover
    from dstack.spec.sizes import format_size
    from dstack.storage.store import Store

    home, state = open_state()
    store = Store.open(home)
    recover(home, state, store)
    manifests = load_all(state, store, ref)
    if as_json:
        print_json(
            {
                wf: {"state": m.state, "paths": m.paths, "files": [e.__dict__ for e in m.entries]}
                for wf, m in manifests.items()
            }
        )
        return
    rows = []
    for wf, manifest in manifests.items():
        note = "" if manifest.state == "complete" else f" ({manifest.state})"
        for entry in manifest.entries:
            rows.append(
                [
                    wf + note,
                    entry.path,
                    format_size(entry.size) if not entry.link else f"-> {entry.link}",
                ]
            )
    table(["JOB", "FILE", "SIZE"], rows, shrink=("JOB", "FILE"))


@app.command(help="Download the files into a folder (default: ./RUN or ./TAG).")
def download(
    ref: str = REF, output: Path | None = typer.Option(None, "-o", "--output", help="Target folder")
) -> None:
    from dstack.artifacts import load_all
    from dstack.cli.progress import transfer_bar
    from dstack.storage.manifest import materialize
    from dstack.storage.store import Store
    from dstack.storage.tree import final_tree

    home, state = open_state()
    store = Store.open(home)
    manifests = load_all(state, store, ref)
    target = output or Path(ref.lstrip(":"))
    # the jobs' files land in one folder: one tree, judged whole (links across jobs)
    tree = final_tree(m.entries for m in manifests.values())
    with transfer_bar("downloading") as bar:
        bar.expect(sum(e.size for e in tree))
        materialize(tree, target, store.blobs, bar)
    files = sum(len(m.entries) for m in manifests.values())
    sys.stderr.write(f"Downloaded {files} files of {ref} to {target}\n")
