"""The house rules, checked: small modules, no import cycles, no environment changes at import,
mypy --strict and ruff clean. Each failure names the modules to look at."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dstack", "stacks")
MAX_LINES = 400


def sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_is_over_400_lines() -> None:
    counts = {module_name(p): len(p.read_text().splitlines()) for p in sources()}
    too_long = {name: n for name, n in counts.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (at module level or in a function); the ones under
    `if TYPE_CHECKING:` are left out: they are for the type checker, never executed."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    """The modules of ours an import statement loads (the deepest one each name spells);
    ``package`` is the importer's package, for relative imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sources()}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            edges |= _targets(node, package, set(paths))
        # `from dstack.x import y` names dstack.x too; a package is not its own dependency
        graph[name] = {t for t in edges if t != name and not name.startswith(t + ".")}
    return graph


def test_imports_are_read_as_python_resolves_them() -> None:
    modules = {"p", "p.a", "p.b", "p.b.c", "p.d"}
    code = (
        "import p.a\nfrom p.b import c, not_a_module\nfrom . import d\nfrom .b.c import x\n"
        "def f():\n    import p.d\nif TYPE_CHECKING:\n    import p.e\n"
    )
    found = [_targets(n, "p", modules) for n in _runtime_imports(ast.parse(code))]  # in p/x.py
    assert sorted(map(sorted, found)) == [
        ["p", "p.d"],
        ["p.a"],
        ["p.b", "p.b.c"],
        ["p.b.c"],
        ["p.d"],
    ]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # Tarjan groups always have one


def test_the_cycle_finder_names_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_our_modules() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# Every write to os.environ goes through os.putenv/os.unsetenv, which raise audit events: so a
# module that sets a variable and restores it before its import ends is caught too.
ENVIRON_PROBE = """
import importlib, json, os, sys
importing = [None]
changed = {}

def audit(event, args):
    if event in ("os.putenv", "os.unsetenv") and importing[0] is not None:
        key = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        changed.setdefault(importing[0], []).append(key)

sys.addaudithook(audit)
for name in sys.argv[1:]:
    importing[0] = name
    try:
        importlib.import_module(name)
    except Exception as e:
        changed.setdefault(name, []).append(f"import failed: {type(e).__name__}: {e}")
    importing[0] = None
print(json.dumps(changed))
"""


def environment_changes(*modules: str, path: Path = ROOT) -> dict[str, list[str]]:
    """What importing each module (in order, in one fresh interpreter) wrote to os.environ."""
    done = subprocess.run(
        [sys.executable, "-c", ENVIRON_PROBE, *modules],
        cwd=path,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_probe_sees_a_variable_set_and_restored_during_import(tmp_path: Path) -> None:
    (tmp_path / "sneaky.py").write_text(
        "import os\nos.environ['SNEAKY'] = '1'\ndel os.environ['SNEAKY']\n"
    )
    (tmp_path / "polite.py").write_text("import os\nHOME = os.environ.get('HOME')\n")
    changes = environment_changes("polite", "sneaky", path=tmp_path)
    assert changes == {"sneaky": ["SNEAKY", "SNEAKY"]}


def test_importing_any_module_leaves_the_environment_alone() -> None:
    """A library must not change its caller's environment just by being imported."""
    names = [m for m in map(module_name, sources()) if not m.endswith("__main__")]
    assert environment_changes(*names) == {}


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.timeout(900)  # a cold mypy cache checks the Pulumi SDKs' types too
def test_mypy_strict_is_clean() -> None:
    done = _tool("mypy")  # settings in pyproject.toml: strict, warn_unused_ignores
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.parametrize("command", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff_is_clean(command: tuple[str, ...]) -> None:
    done = _tool("ruff", *command, "dstack", "stacks", "tests", "bench")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
