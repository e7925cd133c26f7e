"""Views a researcher reads: help, workflows, schema, ps tables that fit 80 columns."""

from __future__ import annotations

import json

from conftest import Project


def test_help_lists_every_command(project: Project) -> None:
    out = project.dstack("--help", check=True).stdout
    for command in (
        "run",
        "ps",
        "logs",
        "attach",
        "stop",
        "rm",
        "inspect",
        "rerun",
        "workflows",
        "schema",
        "artifacts",
        "tags",
    ):
        assert f" {command} " in out or f" {command}\n" in out, command
    assert (
        "Arguments after WORKFLOW set declared variables" in project.dstack("run", "--help").stdout
    )


def test_workflows_lists_name_provider_and_help(project: Project) -> None:
    project.workflows("""
        workflows:
          - {name: prepare, help: Make the data, commands: [x]}
          - {name: train, provider: python, script: t.py, help: Fit the model}
    """)
    rows = json.loads(project.dstack("workflows", "--json", check=True).stdout)
    assert [(r["name"], r["provider"], r["help"]) for r in rows] == [
        ("prepare", "bash", "Make the data"),
        ("train", "python", "Fit the model"),
    ]
    table = project.dstack("workflows", check=True).stdout
    assert "prepare" in table and "Fit the model" in table


def test_schema_is_json_schema_for_the_workflow_file(project: Project) -> None:
    schema = json.loads(project.dstack("schema", check=True).stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["properties"]["workflows"]["items"] == {"$ref": "#/$defs/Workflow"}


def test_ps_shows_active_and_recent_runs_in_80_columns(project: Project) -> None:
    project.workflows("workflows:\n  - {name: a-rather-long-workflow-name, commands: [exit 2]}\n")
    for _ in range(12):
        project.dstack("run", "a-rather-long-workflow-name")
    lines = project.dstack("ps", check=True).stdout.splitlines()
    assert lines[0].split() == ["RUN", "WORKFLOW", "STATUS", "SUBMITTED", "TOOK", "TAG"]
    assert len(lines) == 1 + 10, "ps shows the 10 latest finished runs"
    assert all(len(line) <= 80 for line in lines) and "failed (2)" in lines[1]
    assert len(project.dstack("ps", "-a", check=True).stdout.splitlines()) == 13
    empty = Project(project.root, project.home.parent / "other-home")
    assert "No runs yet" in empty.dstack("ps", check=True).stderr


def test_debug_prints_debug_logs_and_tracebacks_on_stderr(project: Project) -> None:
    assert "--debug" in project.dstack("--help", check=True).stdout
    quiet = project.dstack("ps", check=True)
    assert "DEBUG" not in quiet.stderr
    loud = project.dstack("--debug", "ps", check=True)
    assert f"DEBUG dstack.cli.common: DSTACK_HOME {project.home}" in loud.stderr
    missing = project.dstack("--debug", "logs", "no-such-run")
    assert missing.returncode == 1 and "Error: No run named 'no-such-run'" in missing.stderr
    assert "Traceback" in missing.stderr, "--debug shows where even a user error came from"
    assert "Traceback" not in project.dstack("logs", "no-such-run").stderr
