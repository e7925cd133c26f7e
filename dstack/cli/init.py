"""`dstack init [--store URL]`: choose where artifacts, run records and tags are kept."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    app.command(
        help="Choose the store (default: a folder in DSTACK_HOME). A bucket is created when "
        "missing, with object versioning on, and read/write access is checked."
    )(init)


def init(
    store: str | None = typer.Option(
        None,
        "--store",
        help="file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix",
    ),
    endpoint_url: str | None = typer.Option(
        None, "--endpoint-url", help="S3-compatible server (s3:// only)"
    ),
    region: str | None = typer.Option(None, "--region", help="Bucket region (s3:// only)"),
    profile: str | None = typer.Option(None, "--profile", help="AWS profile (s3:// only)"),
    project: str | None = typer.Option(None, "--project", help="Google Cloud project (gs://)"),
    account: str | None = typer.Option(None, "--account", help="Azure storage account (az://)"),
    reset_state: bool = typer.Option(
        False,
        "--reset-state",
        help="Move a damaged state database aside (state.db.corrupt-TIME) and start a fresh one",
    ),
) -> None:
    if reset_state:
        _reset_state()
        return
    from dstack.cli.common import open_state
    from dstack.storage.check import check_store, save_store_settings

    home, _ = open_state()
    options = {
        "url": store,
        "endpoint_url": endpoint_url,
        "region": region,
        "profile": profile,
        "project": project,
        "account": account,
    }
    settings, notes = check_store(home, {k: v for k, v in options.items() if v is not None})
    if store is not None:
        save_store_settings(home, settings)
    where = settings.url or f"{home.store_dir} (local)"
    done = "; ".join(notes) if notes else "already there"
    sys.stderr.write(f"Store: {where}: {done}; read, write, list and delete work.\n")


def _reset_state() -> None:
    """The way back from a damaged state.db; a healthy one is left alone."""
    from dstack.home import open_home
    from dstack.state.schema import reset_state

    home = open_home()
    aside = reset_state(home)
    if aside is None:
        sys.stderr.write(f"The state database {home.db_path} is healthy; nothing was moved.\n")
        return
    sys.stderr.write(
        f"Moved the damaged state database to {aside} and started a fresh one.\n"
        "This home's earlier local runs are no longer listed; artifacts in the store are kept.\n"
    )
