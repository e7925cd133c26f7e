"""The shipped example runs end to end: prepare -> train -> evaluate on the bundled digits data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Project

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"


def test_digits_pipeline(project: Project, tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, project.root, dirs_exist_ok=True)
    trained = project.dstack("run", "train", "-t", "digits-model", timeout=900)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "prepare | prepared 1347 training and 450 test images" in trained.stdout
    assert "train | trained SVC(C=10.0, gamma=0.001)" in trained.stdout
    evaluated = project.dstack("run", "evaluate", check=True, timeout=300)
    assert "prepare is up to date" in evaluated.stderr
    project.dstack(
        "artifacts", "download", project.last_run()["name"], "-o", str(tmp_path / "m"), check=True
    )
    metrics = json.loads((tmp_path / "m" / "metrics" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["test_images"] == 450
    model = json.loads(project.dstack("artifacts", "list", ":digits-model", "--json").stdout)
    assert [f["path"] for f in model["train"]["files"]] == ["model/model.joblib"]
    assert {f["path"] for f in model["prepare"]["files"]} == {"data/train.npz", "data/test.npz"}
