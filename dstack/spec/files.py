"""Which files make up a project's workflow definitions, and whether they can be read (no
parsing here: this module is on the path of every `dstack run`, which must not import YAML)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dstack.errors import SpecError

MAX_FILE_BYTES = 1024 * 1024  # a workflow, variables or config file: 1 MB at most


def workflow_files(root: Path) -> list[Path]:
    """`.dstack/workflows.y(a)ml` and `.dstack/workflows/*.y(a)ml`, in a stable order; each one
    checked to be a readable file of at most MAX_FILE_BYTES."""
    dstack_dir = root / ".dstack"
    files = [p for p in (dstack_dir / "workflows.yaml", dstack_dir / "workflows.yml") if p.exists()]
    sub = dstack_dir / "workflows"
    if sub.is_dir():
        files += sorted(p for p in sub.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    for path in files:
        check_source(path, str(path.relative_to(root)))
    return files


def variables_file(root: Path) -> Path:
    """`.dstack/variables.yaml`; when it exists, checked like the workflow files."""
    path = root / ".dstack" / "variables.yaml"
    if path.exists():
        check_source(path, ".dstack/variables.yaml")
    return path


def check_source(path: Path, display: str) -> None:
    """Refuse, before it is opened, a file dstack would read as YAML that is not a regular
    readable file (a folder; a FIFO, which would block the read) or is over MAX_FILE_BYTES."""
    try:
        info = path.stat()
    except OSError as e:
        raise SpecError(f"{display}: cannot read the file ({e.strerror}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(
            f"{display}: is a folder, not a file.",
            hint=f"dstack reads {path.name} as YAML; move the folder away",
        )
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(
            f"{display}: is not a regular file (a pipe, socket or device).",
            hint=f"dstack reads {path.name} as YAML; replace it with a file",
        )
    if info.st_size > MAX_FILE_BYTES:
        raise too_large(display, info.st_size)
    if not os.access(path, os.R_OK):
        raise SpecError(
            f"{display}: cannot read the file (permission denied).",
            hint=f"make it readable: chmod u+r {path}",
        )


def too_large(display: str, size: int) -> SpecError:
    return SpecError(
        f"{display}: is {size:,} bytes or more; dstack reads files of at most "
        f"{MAX_FILE_BYTES:,} bytes (1 MB) as YAML.",
        hint="keep data out of it (workflows may also be split over .dstack/workflows/*.yaml)",
    )


def find_repo_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds `.dstack/`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        try:
            if (folder / ".dstack").is_dir():
                return folder
        except OSError as e:
            raise SpecError(
                f"Cannot look into {folder} for a .dstack/ folder ({e.strerror}).",
                hint="run dstack as a user who can read the project's folders",
            ) from None
    raise SpecError(
        f"No .dstack/ folder in {start} or any folder above it.",
        hint="create .dstack/workflows.yaml at the root of your project "
        "(see `dstack schema` for the format)",
    )
