"""The agent as shipped to hosts: a zipapp of dstack/agent and the stdlib-only modules of
dstack it imports, found by following its imports (so the bundle follows the code). Built
byte-for-byte the same from the same sources; staged on a host once under its sha256."""

from __future__ import annotations

import ast
import hashlib
import io
import zipfile
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # the dstack package folder
ENTRY = "dstack.agent.__main__"
_STAMP = (1980, 1, 1, 0, 0, 0)  # fixed times: the same sources give the same bundle


def modules(entry: str = ENTRY) -> list[str]:
    """The dstack modules the agent needs: ``entry`` and what it imports, with the package
    folders on their way (their __init__ runs on import)."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen or not _source(name):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += _imports(name)
    return sorted(seen)


def _source(module: str) -> Path | None:
    base = PACKAGE.parent / module.replace(".", "/")
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imports(module: str) -> list[str]:
    """dstack modules imported anywhere in ``module`` but under ``if TYPE_CHECKING:``."""
    path = _source(module)
    assert path is not None
    found = []
    for node in _executed(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.split(".")[0] == "dstack"]


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node but those inside ``if TYPE_CHECKING:`` blocks."""
    nodes = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return nodes


@cache
def bundle() -> tuple[bytes, str]:
    """The zipapp's bytes and their sha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in modules():
            path = _source(name)
            assert path is not None
            _add(archive, str(path.relative_to(PACKAGE.parent)), path.read_bytes())
        _add(archive, "__main__.py", f"import runpy\nrunpy.run_module({ENTRY!r})\n".encode())
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, _STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)
