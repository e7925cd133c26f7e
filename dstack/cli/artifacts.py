"""`dstack artifacts list|download RUN|:TAG`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dstack.cli.common import open_session, print_json, table

app = typer.Typer(
    help="List and download the artifacts of a run (RUN) or a tagged run (:TAG).",
    no_args_is_help=True,
)
REF = typer.Argument(..., metavar="RUN|:TAG", help="A run name, or :TAG for the tagged run")


@app.command("list", help="List the files a run saved, per job.")
def list_(ref: str = REF, as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    from dstack.service.artifacts import list_artifacts
    from dstack.spec.sizes import format_size

    jobs = list_artifacts(open_session(), ref)
    if as_json:
        print_json({job.job: job.to_dict() for job in jobs})
        return
    rows = []
    for job in jobs:
        note = "" if job.state == "complete" else f" ({job.state})"
        for file in job.files:
            size = format_size(file.size) if not file.link else f"-> {file.link}"
            rows.append([job.job + note, file.path, size])
    table(["JOB", "FILE", "SIZE"], rows, shrink=("JOB", "FILE"))


@app.command(help="Download the files into a folder (default: ./RUN or ./TAG).")
def download(
    ref: str = REF, output: Path | None = typer.Option(None, "-o", "--output", help="Target folder")
) -> None:
    from dstack.cli.progress import transfer_bar
    from dstack.service.artifacts import download as fetch

    with transfer_bar("downloading") as bar:
        done = fetch(open_session(), ref, output, bar)
    sys.stderr.write(f"Downloaded {done.files} files of {ref} to {done.target}\n")
