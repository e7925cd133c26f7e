"""Which files make up a project's workflow definitions (no parsing here)."""

from __future__ import annotations

from pathlib import Path

from dstack.errors import SpecError


def workflow_files(root: Path) -> list[Path]:
    """`.dstack/workflows.y(a)ml` and `.dstack/workflows/*.y(a)ml`, in a stable order."""
    dstack_dir = root / ".dstack"
    files = [p for p in (dstack_dir / "workflows.yaml", dstack_dir / "workflows.yml") if p.exists()]
    sub = dstack_dir / "workflows"
    if sub.is_dir():
        files += sorted(p for p in sub.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    return files


def variables_file(root: Path) -> Path:
    return root / ".dstack" / "variables.yaml"


def find_repo_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds `.dstack/`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".dstack").is_dir():
            return folder
    raise SpecError(
        f"No .dstack/ folder in {start} or any folder above it.",
        hint="create .dstack/workflows.yaml at the root of your project "
        "(see `dstack schema` for the format)",
    )
