"""The workflow format: every key of DESIGN.md §2, aliases, variables, and run arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.errors import SpecError
from dstack.runner.plan import make_plan
from dstack.spec.loader import Project as SpecProject
from dstack.spec.schema import workflows_schema
from dstack.spec.sizes import parse_size


def load(
    root: Path, text: str, variables: str | None = None, extra: dict[str, str] | None = None
) -> SpecProject:
    import textwrap

    (root / ".dstack" / "workflows").mkdir(parents=True, exist_ok=True)
    (root / ".dstack" / "workflows.yaml").write_text(textwrap.dedent(text))
    if variables is not None:
        (root / ".dstack" / "variables.yaml").write_text(textwrap.dedent(variables))
    for name, body in (extra or {}).items():
        (root / ".dstack" / "workflows" / name).write_text(textwrap.dedent(body))
    return SpecProject.load(root)


def test_all_keys_and_aliases(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        workflows:
          - name: train
            help: Train the model
            provider: python
            before_run: [pip --version]
            file: train.py
            args: --epochs 3 --name "a b"
            requirements: requirements.txt
            version: "3.11"
            env: [A=1, FROM_CALLER]
            environment: {B: 2}
            working_dir: src/
            artifacts: [out, {path: ckpt, mount: true}]
            deps: [{workflow: prepare}, {tag: base}, prepare]
            depends-on: [prepare, data:v1]
            resources: {cpu: 2, memory: 1.5GB, gpu: {count: 2, name: A100, memory: 40GB},
                        shm_size: 8GB, disk: 100GB, spot: true, local: true}
            ports: 2
          - name: prepare
            commands: "echo one\\necho two"
          - name: data
            commands: [echo data]
    """,
    )
    wf = project.workflow("train", {}, [])
    assert wf.setup == ["pip --version"]
    assert wf.script == "train.py" and wf.args == ["--epochs", "3", "--name", "a b"]
    assert wf.python == "3.11" and wf.requirements == "requirements.txt"
    assert wf.env == {"A": "1", "FROM_CALLER": None, "B": "2"}
    assert wf.working_dir == "src"
    assert [(a.path, a.mount) for a in wf.artifacts] == [("out", False), ("ckpt", True)]
    assert [(d.workflow, d.tag) for d in wf.deps] == [
        ("prepare", None),
        (None, "base"),
        ("prepare", None),
    ]
    assert wf.to_spec().upstream() == [("prepare", None), ("data", "v1")]
    r = wf.resources
    assert (r.cpu, r.memory, r.shm_size, r.disk) == (
        2,
        int(1.5 * 1024**3),
        8 * 1024**3,
        100 * 1024**3,
    )
    assert r.gpu is not None and (r.gpu.count, r.gpu.name, r.gpu.memory) == (
        2,
        "A100",
        40 * 1024**3,
    )
    assert r.interruptible and r.local and wf.ports == 2
    assert project.workflow("prepare", {}, []).commands == ["echo one\necho two"]


def test_gpu_count_shorthand_and_python_script_alias(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        workflows:
          - name: a
            provider: python
            python_script: a.py
            resources: {gpu: 1}
    """,
    )
    wf = project.workflow("a", {}, [])
    assert wf.script == "a.py" and wf.resources.gpu is not None and wf.resources.gpu.count == 1


def test_workflows_folder_is_merged(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        "workflows:\n  - name: a\n    commands: [echo a]\n",
        extra={"more.yaml": "workflows:\n  - name: b\n    commands: [echo b]\n"},
    )
    assert sorted(project.raw) == ["a", "b"]


def test_variables_globals_per_workflow_overrides_and_run_args(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        workflows:
          - name: train
            commands: ["python train.py --lr ${{ lr }} --seed ${{ variables.seed }} ${{ run.args }}"]
            resources: {cpu: "${{ cpus }}"}
    """,
        variables="""
        variables:
          seed: 7
          cpus: 1
          train:
            lr: 0.01
    """,
    )
    plan = make_plan(project, "train", ["--lr", "0.5", "--unknown", "x", "pos"])
    wf = plan.jobs[0].spec
    assert wf.commands == ("python train.py --lr 0.5 --seed 7 --unknown x pos",)
    assert wf.resources.cpu == 1
    assert plan.overrides == {"lr": "0.5"} and plan.run_args == ["--unknown", "x", "pos"]
    assert (
        make_plan(project, "train", ["--lr=0.2"])
        .jobs[0]
        .spec.commands[0]
        .startswith("python train.py --lr 0.2 ")
    )


def test_run_args_after_dashes_are_passed_untouched(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        "workflows:\n  - name: t\n    commands: ['echo ${{ lr }} ${{ run.args }}']\n",
        variables="variables:\n  lr: 1\n",
    )
    plan = make_plan(project, "t", ["--lr", "2", "a", "--", "--lr", "3", "--", "b"])
    assert plan.overrides == {"lr": "2"}
    assert plan.run_args == ["a", "--lr", "3", "--", "b"]
    with pytest.raises(SpecError, match="--lr needs a value"):
        make_plan(project, "t", ["--lr", "--", "x"])


def test_plan_is_topological_and_skips_tagged_upstream(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        workflows:
          - {name: evaluate, commands: [x], depends-on: [train, prepare]}
          - {name: train, commands: [x], depends-on: [prepare, data:v1]}
          - {name: prepare, commands: [x]}
          - {name: data, commands: [x]}
    """,
    )
    plan = make_plan(project, "evaluate", [])
    assert [j.spec.name for j in plan.jobs] == ["prepare", "train", "evaluate"]
    assert plan.jobs[1].upstream == ["prepare"]


@pytest.mark.parametrize(
    "text,size",
    [
        ("16GB", 16 * 1024**3),
        ("512MB", 512 * 1024**2),
        ("1.5 GiB", int(1.5 * 1024**3)),
        ("2TB", 2 * 1024**4),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["16", "16XB", "lots", ""])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_unquoted_python_310_is_refused_with_hint(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        "workflows:\n  - name: a\n    provider: python\n    script: a.py\n    python: 3.10\n",
    )
    with pytest.raises(SpecError, match="quote the version"):
        project.workflow("a", {}, [])


def test_schema_describes_keys_and_aliases() -> None:
    schema = workflows_schema()
    props = schema["$defs"]["Workflow"]["properties"]
    for key in (
        "name",
        "commands",
        "depends-on",
        "before_run",
        "file",
        "python_script",
        "environment",
        "artifacts",
        "deps",
        "resources",
        "ports",
    ):
        assert key in props, key
    assert schema["$defs"]["Workflow"]["additionalProperties"] is False
    assert "spot" in schema["$defs"]["Resources"]["properties"]
