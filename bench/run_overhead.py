"""Overhead of `dstack run` for a one-line workflow, next to `dvc repro` and a Metaflow run.

Every tool runs the same one command, `echo hello` in a shell; the overhead is a tool's median
wall time minus that of running `bash -c 'echo hello'` directly.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _timing import (
    DSTACK,
    CommandFailed,
    Timing,
    env_with,
    print_table,
    run_checked,
    seconds,
    time_command,
)

RUNS = 7
TARGET = 0.5
BIN = Path(sys.executable).parent
NOT_INSTALLED = "not installed (pip install 'dstack[bench]')"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]

WORKFLOWS_YAML = "workflows:\n  - name: hello\n    commands:\n      - echo hello\n"
DVC_YAML = "stages:\n  hello:\n    cmd: echo hello\n    always_changed: true\n"
FLOW_PY = """\
import subprocess

from metaflow import FlowSpec, step


class HelloFlow(FlowSpec):
    @step
    def start(self):
        subprocess.run(["bash", "-c", "echo hello"], check=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HelloFlow()
"""


def git_repo(path: Path, files: dict[str, str]) -> Path:
    """A git repository at ``path`` with ``files`` committed."""
    path.mkdir(parents=True)
    run_checked([*GIT, "init", "-q"], cwd=path)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    run_checked([*GIT, "add", "-A"], cwd=path)
    run_checked([*GIT, "commit", "-q", "-m", "bench"], cwd=path)
    return path


def bench_bare(tmp: Path) -> Timing:
    return time_command(["bash", "-c", "echo hello"], runs=RUNS, cwd=tmp)


def bench_dstack_git(tmp: Path) -> Timing:
    project = git_repo(tmp / "dstack-git", {".dstack/workflows.yaml": WORKFLOWS_YAML})
    env = env_with(DSTACK_HOME=str(tmp / "dstack-home"))
    return time_command([DSTACK, "run", "hello"], runs=RUNS, cwd=project, env=env)


def bench_dstack_plain(tmp: Path) -> Timing:
    project = tmp / "dstack-plain"
    (project / ".dstack").mkdir(parents=True)
    (project / ".dstack" / "workflows.yaml").write_text(WORKFLOWS_YAML)
    env = env_with(DSTACK_HOME=str(tmp / "dstack-home"))
    return time_command([DSTACK, "run", "hello"], runs=RUNS, cwd=project, env=env)


def bench_dvc(tmp: Path) -> Timing:
    env = env_with(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"))
    project = git_repo(tmp / "dvc", {"dvc.yaml": DVC_YAML})
    run_checked([BIN / "dvc", "init", "-q"], cwd=project, env=env)
    return time_command([BIN / "dvc", "repro"], runs=RUNS, cwd=project, env=env)


def bench_metaflow(tmp: Path) -> Timing:
    project = tmp / "metaflow"
    project.mkdir()
    (project / "flow.py").write_text(FLOW_PY)
    env = env_with(
        METAFLOW_HOME=str(tmp / "metaflow-home"),
        USERNAME="bench",
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(project),
    )
    return time_command(
        [sys.executable, "flow.py", "--no-pylint", "run"], runs=RUNS, cwd=project, env=env
    )


BARE = "bash -c 'echo hello'"
DSTACK_RUN = "dstack run hello (git repo)"
BENCHES: list[tuple[str, str, str | None, Callable[[Path], Timing]]] = [
    ("bare", BARE, None, bench_bare),
    ("dstack", DSTACK_RUN, None, bench_dstack_git),
    ("dstack", "dstack run hello (no git)", None, bench_dstack_plain),
    ("dvc", "dvc repro", "dvc", bench_dvc),
    ("metaflow", "python flow.py --no-pylint run", "metaflow", bench_metaflow),
]


def measure(tmp: Path) -> dict[str, Timing | str]:
    """Each bench's timing, or why it has none (missing package, failed command)."""
    results: dict[str, Timing | str] = {}
    for _, label, module, bench in BENCHES:
        if module and importlib.util.find_spec(module) is None:
            results[label] = NOT_INSTALLED
            continue
        try:
            results[label] = bench(tmp)
        except CommandFailed as e:
            print(f"{label} failed: {e}", file=sys.stderr)
            results[label] = "failed (see above)"
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dstack-bench-") as tmp:
        results = measure(Path(tmp))
    bare = results[BARE]
    if isinstance(bare, str):
        raise SystemExit(f"the bare command {bare}")
    overheads = {
        label: r.median - bare.median for label, r in results.items() if isinstance(r, Timing)
    }
    rows = [
        [tool, label, "-", "-", "-"]
        if isinstance(r := results[label], str)
        else [tool, label, seconds(r.median), seconds(r.min), seconds(overheads[label])]
        for tool, label, _, _ in BENCHES
    ]
    print_table(
        f"One-line workflow, wall seconds ({RUNS} runs after 1 warm-up each)",
        ["tool", "command", "median", "min", "overhead"],
        rows,
        text_columns=2,
    )
    for tool, label, _, _ in BENCHES:
        if isinstance(result := results[label], str):
            print(f"{tool}: {result}")
    print(
        "overhead = median - bare median. Flags: dvc.yaml stage with always_changed: true,\n"
        "so plain `dvc repro` re-runs it every time; metaflow with local datastore and\n"
        "metadata, --no-pylint; dstack with default flags. dstack (first row) and dvc run\n"
        "in a git repo with one commit.\n"
    )
    if DSTACK_RUN not in overheads:
        print("dstack overhead (git repo): not measured")
        return
    dstack = overheads[DSTACK_RUN]
    others = {
        tool: overheads[label]
        for tool, label, module, _ in BENCHES
        if module and label in overheads
    }
    met = dstack < TARGET and all(dstack < other for other in others.values())
    print(
        f"dstack overhead (git repo): {seconds(dstack)} s; target < {TARGET} s and below "
        f"{' and '.join(others) or 'the others (none measured)'}: {'met' if met else 'missed'}"
    )


if __name__ == "__main__":
    main()
