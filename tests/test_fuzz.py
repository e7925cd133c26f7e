"""Property-based fuzzing (hypothesis) of what dstack reads from users' files and from stores:
the workflow loader, variables, and the manifest parser. Every input must end in success or in
a DstackError (one clear paragraph for the user); any other exception is a bug, reported with
the smallest input hypothesis finds for it (one per distinct bug).

The normal run tries 200 inputs per target with a fixed seed; `pytest -m slow` runs
FULL_COUNT per target with fresh randomness, and bench/fuzz_inputs.py runs the same targets
counting every failure instead of stopping at the first. These tests fail for as long as the
code they fuzz has such bugs: that is their job.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dstack.errors import DstackError
from dstack.runner.plan import plan_run
from dstack.spec.loader import RESOURCE_KEYS, WORKFLOW_KEYS, Project
from dstack.storage.blobs import chunk_tree
from dstack.storage.manifest import Manifest

FULL_COUNT = 3000  # per target: 12,000 inputs in all
QUICK_COUNT = 200
SETTINGS: dict[str, Any] = {  # what every run of these properties shares
    "deadline": None,  # a slow input is not a bug here; a wrong exception is
    "database": None,  # nothing written into the repository
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


# --- what dstack does with each kind of input ----------------------------------------------


def plan_like_the_cli(
    workflows: bytes, variables: bytes | None = None, tokens: tuple[str, ...] = ()
) -> None:
    """What `dstack workflows` and `dstack run NAME TOKENS` do with the files of a project:
    load `.dstack/`, then plan every workflow it names (variables substituted, models
    validated, the plan cached and read back) and build each job's spec."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / ".dstack").mkdir(parents=True)
        (repo / ".dstack" / "workflows.yaml").write_bytes(workflows)
        if variables is not None:
            (repo / ".dstack" / "variables.yaml").write_bytes(variables)
        for name in list(Project.load(repo).raw)[:4]:
            for job in plan_run(Path(tmp) / "cache", repo, name, list(tokens)).jobs:
                job.spec  # noqa: B018 - building it is the check


def parse_manifest(raw: bytes) -> None:
    """A manifest read from a store; what is accepted must survive being written again."""
    manifest = Manifest.from_json(raw)
    again = Manifest.from_json(manifest.to_json())
    assert again.to_json() == manifest.to_json(), "a parsed manifest changed on a round trip"


# --- inputs ----------------------------------------------------------------------------------

ODD_STRINGS = [
    "", " ", "\n", "~", ".", "..", "../x", "/etc/passwd", "a/../../b", "a//b", "x\x00y",
    "${{ x }}", "${{ run.args }}", "${{ variables.lr }}", "${{", "}}", "${{ a b }}",
    "16GB", "-1GB", "1e400", "3.10", "NaN", "0x1F", "yes", "off", "null", "=", "A=b",
    "--lr", "; touch X", "$(id)", "`id`", "'", '"', "\t", "\u202e", "\ufeff", "é" * 40,
    "a" * 300, "é" * 3000,
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(ODD_STRINGS),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
KEYS = st.one_of(
    st.sampled_from([*WORKFLOW_KEYS, *RESOURCE_KEYS, "workflows", "variables", "name"]),
    st.text(max_size=10),
    st.integers(),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
NAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True),
    st.sampled_from(ODD_STRINGS),
    SCALARS,
)
RESOURCES = st.dictionaries(st.sampled_from(RESOURCE_KEYS) | KEYS, VALUES, max_size=4)
WORKFLOW = st.fixed_dictionaries(
    {"name": NAMES},
    optional={
        key: RESOURCES if key == "resources" else VALUES for key in WORKFLOW_KEYS if key != "name"
    },
)
STRUCTURES = st.one_of(
    st.fixed_dictionaries({"workflows": st.lists(WORKFLOW | VALUES, max_size=4)}),
    st.dictionaries(KEYS, VALUES, max_size=3),
    VALUES,
)


def dump(value: object) -> bytes:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).encode()


VALID = """workflows:
  - name: prepare
    commands: [echo hi]
    artifacts: [data]
  - name: train
    depends-on: [prepare]
    provider: python
    script: train.py
    args: --lr ${{ lr }}
    resources: {cpu: 2, memory: 4GB, gpu: {count: 1, name: T4}}
"""
FRAGMENTS = [
    "&a [*a]", "<<: *x", "*undefined", "!!python/object/apply:os.system ['id']",
    "!!binary aGVsbG8=", "!!timestamp 2001-12-14", "!!set {a, b}", "? [a, b]\n: c",
    "{[1]: 2}", "{{a: 1}: 2}", "cpu: " + "9" * 5000, "memory: " + "9" * 30 + "GB", "\t",
    "\x00", "\ufeff", "---\n", "...", "%YAML 1.1", "!x y", "key: [", "'unterminated",
    "- name: train", "name: prepare", "workflows: {}", "  - ", ": :", "\r\n", "\x85",
    "x: " + "[" * 3000 + "]" * 3000, "x: " + "{a: " * 500 + "}" * 500, "name: " + "w" * 10000,
]  # fmt: skip


def splice(base: str, edits: list[tuple[int, str]]) -> bytes:
    """``base`` with each text inserted at the start of a line (by index, wrapping)."""
    lines = base.split("\n")
    for at, text in edits:
        lines.insert(at % (len(lines) + 1), text)
    return "\n".join(lines).encode()


def alias_tree(depth: int, width: int) -> bytes:
    """A workflow whose keys are anchors each listing ``width`` aliases of the one before:
    ``width ** depth`` strings once expanded, from a file of a few lines."""
    lines = ["workflows:", "  - name: bomb", "    k0: &k0 [x]"]
    for level in range(1, depth + 1):
        lines.append(f"    k{level}: &k{level} [{', '.join([f'*k{level - 1}'] * width)}]")
    return "\n".join(lines).encode() + b"\n"


YAML_FILES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.builds(
        splice,
        st.sampled_from([VALID, "", "workflows:\n"]),
        st.lists(
            st.tuples(st.integers(0, 20), st.sampled_from(FRAGMENTS) | st.text(max_size=20)),
            min_size=1,
            max_size=4,
        ),
    ),
    st.builds(alias_tree, st.integers(1, 5), st.integers(1, 5)),
)

VAR_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
TEMPLATES = st.lists(
    st.one_of(
        st.text(max_size=6),
        VAR_NAMES.map(lambda name: "${{ " + name + " }}"),
        st.sampled_from(ODD_STRINGS),
    ),
    max_size=4,
).map("".join)
VARIABLES = st.one_of(
    st.fixed_dictionaries(
        {
            "variables": st.dictionaries(
                VAR_NAMES | st.just("w") | KEYS,
                VALUES | st.dictionaries(VAR_NAMES | KEYS, VALUES, max_size=3),
                max_size=4,
            )
        }
    ),
    VALUES,
)
TEMPLATED = st.fixed_dictionaries(
    {"name": st.just("w")},
    optional={
        "commands": st.lists(TEMPLATES, max_size=3) | TEMPLATES,
        "args": st.lists(TEMPLATES, max_size=3) | TEMPLATES,
        "env": st.dictionaries(TEMPLATES, TEMPLATES, max_size=3),
        "working_dir": TEMPLATES,
        "resources": st.dictionaries(st.sampled_from(RESOURCE_KEYS), TEMPLATES, max_size=3),
        "ports": TEMPLATES,
        "depends-on": st.lists(TEMPLATES, max_size=2),
        "artifacts": st.lists(TEMPLATES, max_size=2),
    },
)
TOKENS = st.lists(
    st.one_of(
        st.text(max_size=8),
        VAR_NAMES.map(lambda name: "--" + name),
        st.sampled_from(["--", "--=", "--lr=1", "-d"]),
    ),
    max_size=5,
).map(tuple)
VARIABLE_CASES = st.tuples(
    st.builds(lambda wf: dump({"workflows": [wf]}), TEMPLATED),
    st.one_of(st.none(), VARIABLES.map(dump), YAML_FILES),
    TOKENS,
)

HEX = "0123456789abcdef"
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
SHAS = st.one_of(
    st.text(HEX, min_size=64, max_size=64),
    st.text(HEX.upper(), min_size=64, max_size=64),
    st.text(HEX, max_size=70),
    JSON_SCALARS,
)
PATHS = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "~", "c.txt"]), max_size=5).map("/".join),
    st.text(max_size=20),
    JSON_SCALARS,
)
NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=2**20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
JSON_JUNK = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def chunked(draw: st.DrawFn) -> dict[str, object]:
    """A file kept as chunks whose list matches its hash, so the deeper checks run."""
    parts = draw(st.lists(st.text(HEX, min_size=64, max_size=64), min_size=1, max_size=3))
    return {"sha256": chunk_tree(parts), "chunks": parts}


ENTRIES = st.one_of(
    st.fixed_dictionaries(
        {"path": PATHS, "size": NUMBERS, "mode": NUMBERS, "sha256": SHAS},
        optional={"link": st.none() | PATHS, "chunks": st.none() | st.lists(SHAS, max_size=3)},
    ),
    st.builds(
        lambda entry, extra: {**entry, **extra},
        st.fixed_dictionaries({"path": PATHS, "size": NUMBERS, "mode": NUMBERS}),
        chunked(),
    ),
    JSON_JUNK,
)
MANIFESTS = st.fixed_dictionaries(
    {},
    optional={
        "version": NUMBERS,
        "state": st.sampled_from(["live", "complete", "partial"]) | JSON_JUNK,
        "paths": st.lists(PATHS, max_size=3) | JSON_JUNK,
        "entries": st.lists(ENTRIES, max_size=5) | JSON_JUNK,
    },
)
MANIFEST_FILES = st.one_of(
    MANIFESTS.map(lambda m: json.dumps(m).encode()),
    JSON_JUNK.map(lambda j: json.dumps(j).encode()),
    st.binary(max_size=60),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 10_000).map(
        lambda n: b'{"entries": [], "state": "live", "version": ' + b"9" * n + b"}"
    ),
    st.sampled_from(
        [b"NaN", b"-Infinity", b"1e999999", b'{"entries": [1e999]}', b"\xef\xbb\xbf{}"]
    ),
)


# --- the targets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Generated inputs of one kind, and what dstack does with one."""

    inputs: st.SearchStrategy[Any]
    run: Callable[[Any], None]


TARGETS: dict[str, Target] = {
    "loader, YAML texts": Target(YAML_FILES, plan_like_the_cli),
    "loader, structures dumped to YAML": Target(STRUCTURES.map(dump), plan_like_the_cli),
    "variables": Target(VARIABLE_CASES, lambda case: plan_like_the_cli(*case)),
    "manifest parser": Target(MANIFEST_FILES, parse_manifest),
}


def ends_well(target: Target, value: object) -> None:
    """Success or a DstackError; anything else propagates as the bug it is."""
    with contextlib.suppress(DstackError):
        target.run(value)


def check(name: str, examples: int, derandomize: bool) -> None:
    target = TARGETS[name]

    @settings(max_examples=examples, derandomize=derandomize, **SETTINGS)
    @given(target.inputs)
    def ends_in_success_or_a_dstack_error(value: object) -> None:
        ends_well(target, value)

    ends_in_success_or_a_dstack_error()


@pytest.mark.parametrize("name", TARGETS)
def test_generated_input_ends_in_success_or_a_clear_error(name: str) -> None:
    check(name, QUICK_COUNT, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_many_generated_inputs_end_in_success_or_a_clear_error(name: str) -> None:
    check(name, FULL_COUNT, derandomize=False)
