"""Secrets: stored 0600, given to jobs as environment variables, masked in streamed and stored
logs, never shown by `secrets list` or `inspect`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from conftest import Project

VALUE = "s3cr3t-Value-42"


def add_secret(project: Project, name: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dstack", "secrets", "add", name],
        input=value + "\n",
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_secret_reaches_the_job_and_is_masked_everywhere(project: Project) -> None:
    add_secret(project, "API_TOKEN", VALUE)
    project.workflows("""
        workflows:
          - name: leak
            commands:
              - echo "token=$API_TOKEN"
              - echo "$API_TOKEN" | sha256sum | cut -c1-16
              - echo "twice $API_TOKEN $API_TOKEN" >&2
    """)
    done = project.dstack("run", "leak", check=True)
    assert VALUE not in done.stdout + done.stderr
    import hashlib

    digest = hashlib.sha256(f"{VALUE}\n".encode()).hexdigest()[:16]
    assert done.stdout == f"token=******\n{digest}\ntwice ****** ******\n", (
        "the job sees the real value"
    )
    run = project.last_run()["name"]
    assert VALUE not in project.dstack("logs", run, check=True).stdout
    assert VALUE not in project.dstack("inspect", run, "--json", check=True).stdout
    for path in (project.home / "runs").rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), f"{path} holds the secret"
    assert VALUE.encode() not in (project.home / "state.db").read_bytes()


def test_secrets_file_is_private_and_list_shows_names_only(project: Project) -> None:
    add_secret(project, "WANDB_API_KEY", VALUE)
    project.dstack("secrets", "add", "OTHER", "inline-value", check=True)
    mode = stat.S_IMODE((project.home / "secrets.json").stat().st_mode)
    assert mode == 0o600
    listed = project.dstack("secrets", "list", "--json", check=True).stdout
    assert [s["name"] for s in json.loads(listed)] == ["OTHER", "WANDB_API_KEY"]
    assert VALUE not in listed and VALUE not in project.dstack("secrets", "list").stdout
    project.dstack("secrets", "delete", "OTHER", check=True)
    missing = project.dstack("secrets", "delete", "WANDB_API_KE")
    assert missing.returncode == 1 and "did you mean 'WANDB_API_KEY'" in missing.stderr
    bad = project.dstack("secrets", "add", "1-bad", "x")
    assert bad.returncode == 2 and "cannot be a secret's name" in bad.stderr
