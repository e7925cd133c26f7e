"""Chaining: depends-on in topological order (parallel when independent), reuse, deps and tags."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Project, meet

PIPELINE = """
workflows:
  - name: prepare
    commands:
      - mkdir -p data && echo "${{ size }}" > data/input.txt
      - echo prepared
    artifacts: [data]
  - name: train
    depends-on: [prepare]
    commands:
      - cat data/input.txt
      - mkdir -p model && echo "model of $(cat data/input.txt)" > model/weights.txt
    artifacts: [model]
  - name: evaluate
    deps: [{workflow: train}]
    commands: [cat model/weights.txt]
"""
VARIABLES = "variables:\n  size: 10\n"


def pipeline(project: Project) -> None:
    project.workflows(PIPELINE)
    project.write(".dstack/variables.yaml", VARIABLES)


def test_upstream_runs_first_and_passes_artifacts(project: Project) -> None:
    pipeline(project)
    done = project.dstack("run", "train", check=True)
    assert done.stdout == "prepare | prepared\ntrain | 10\n"
    record = project.inspect(project.last_run()["name"])
    train = next(j for j in record["jobs"] if j["workflow"] == "train")
    assert [i["source"] for i in train["inputs"]] == ["prepare (this run)"]
    assert train["upstream"] == ["prepare"]


def test_up_to_date_upstream_is_reused_unless_no_cache(project: Project) -> None:
    pipeline(project)
    first = project.dstack("run", "train", check=True)
    first_name = project.last_run()["name"]
    second = project.dstack("run", "train", check=True)
    assert "prepare is up to date, reusing run " + first_name in second.stderr
    assert second.stdout == "train | 10\n"
    reused = project.inspect(project.last_run()["name"])["jobs"][0]
    assert reused["reused_from"] == f"{first_name}/prepare"
    forced = project.dstack("run", "train", "--no-cache", check=True)
    assert "reusing" not in forced.stderr and "prepare | prepared" in forced.stdout
    changed = project.dstack("run", "train", "--size", "20", check=True)
    assert "reusing" not in changed.stderr and "train | 20" in changed.stdout
    assert first.returncode == 0


def test_code_change_reruns_upstream(project: Project) -> None:
    pipeline(project)
    project.dstack("run", "train", check=True)
    project.write("notes.txt", "new file changes the snapshot\n")
    assert "reusing" not in project.dstack("run", "train", check=True).stderr


def test_independent_jobs_run_in_parallel(project: Project, tmp_path: Path) -> None:
    project.workflows(f"""
        workflows:
          - {{name: a, commands: [{json.dumps(meet(tmp_path, "a", "b"))}]}}
          - {{name: b, commands: [{json.dumps(meet(tmp_path, "b", "a"))}]}}
          - {{name: c, depends-on: [a, b], commands: [echo both done]}}
    """)
    done = project.dstack("run", "c", check=True)
    lines = done.stdout.splitlines()
    assert {"a | met b", "b | met a"} <= set(lines), "a and b ran at the same time"
    assert lines[-1] == "c | both done"


def test_failed_upstream_fails_downstream_without_running_it(project: Project) -> None:
    project.workflows("""
        workflows:
          - {name: up, commands: [exit 4]}
          - {name: down, depends-on: [up], commands: [echo should not run]}
    """)
    done = project.dstack("run", "down")
    assert done.returncode == 4 and "should not run" not in done.stdout
    jobs = {j["workflow"]: j for j in project.inspect(project.last_run()["name"])["jobs"]}
    assert jobs["up"]["status"] == "failed" and jobs["down"]["status"] == "failed"
    assert "upstream" in jobs["down"]["error"]


def test_deps_workflow_uses_last_successful_run_and_never_reruns(project: Project) -> None:
    pipeline(project)
    project.dstack("run", "train", check=True)
    runs_before = len(project.ps())
    done = project.dstack("run", "evaluate", check=True)
    assert done.stdout == "model of 10\n"
    assert len(project.ps()) == runs_before + 1
    record = project.inspect(project.last_run()["name"])
    assert record["jobs"][0]["inputs"][0]["source"].startswith("train (run ")


def test_deps_tag_and_depends_on_tag(project: Project) -> None:
    pipeline(project)
    project.dstack("run", "train", "-t", "v1", check=True)
    project.dstack("run", "train", "--size", "99", check=True)  # the latest run differs from v1
    project.workflows(
        PIPELINE
        + """
  - name: from-tag
    deps: [{tag: v1}]
    commands: [cat model/weights.txt data/input.txt]
  - name: from-upstream-tag
    depends-on: ["train:v1"]
    commands: [cat model/weights.txt]
"""
    )
    assert project.dstack("run", "from-tag", check=True).stdout == "model of 10\n10\n"
    done = project.dstack("run", "from-upstream-tag", check=True)
    assert done.stdout == "model of 10\n", "train was not re-run: its tagged artifacts were used"
    assert [j["workflow"] for j in project.inspect(project.last_run()["name"])["jobs"]] == [
        "from-upstream-tag"
    ]
