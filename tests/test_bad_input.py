"""Hostile and broken input from users' files and the command line, through the real CLI: each
case ends in one clear paragraph (the file, line or field, and a hint), a non-zero exit, no
traceback, and nothing written: no run recorded, no file of DSTACK_HOME changed.

YAML files are bounded (dstack.spec.files, dstack.spec.yamlio): 1 MB, 100 levels of nesting,
100,000 values once aliases are expanded. Names (dstack.spec.names) are at most 100
characters of letters, digits, '-', '_' and '.'."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import Project

OK = """
workflows:
  - name: ok
    commands: [echo ok]
"""
FILES = {
    "workflows": ".dstack/workflows.yaml",
    "variables": ".dstack/variables.yaml",
    "config": "config.yaml",  # in DSTACK_HOME
}
MEMORY_LIMIT = 1024**3  # address space for a CLI process that must refuse an alias bomb


def recorded_runs(project: Project) -> list[tuple[str, str]]:
    """The runs in the state database, read directly (a broken config.yaml stops `ps`)."""
    if not project.home.joinpath("state.db").exists():
        return []
    with sqlite3.connect(f"file:{project.home / 'state.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT name, status FROM runs ORDER BY name").fetchall()


def home_files(project: Project) -> dict[str, tuple[int, int]]:
    """Every file of DSTACK_HOME with its size and mtime, but the state database (opened by
    every command; what it holds is compared through `ps`) and a config a test wrote."""
    found = {}
    for path in project.home.rglob("*"):
        rel = str(path.relative_to(project.home))
        if path.is_file() and not rel.startswith("state.db") and rel != "config.yaml":
            info = path.stat()
            found[rel] = (info.st_size, info.st_mtime_ns)
    return found


def refused(project: Project, *args: str, code: int = 2, env: dict[str, str] | None = None) -> str:
    """Run a command that must be refused cleanly; return its one paragraph (stderr)."""
    runs, files = recorded_runs(project), home_files(project)
    done = project.dstack(*args, env=env)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("Error: ") and done.stderr.count("Error:") == 1, done.stderr
    assert "\nHint: " in done.stderr and "\n\n" not in done.stderr.strip(), done.stderr
    assert recorded_runs(project) == runs and home_files(project) == files, "nothing written"
    return done.stderr


def put(project: Project, which: str, data: bytes) -> Path:
    path = project.home / FILES[which] if which == "config" else project.root / FILES[which]
    path.write_bytes(data)
    return path


@pytest.fixture
def seeded(project: Project) -> Project:
    """A home with one finished run (and its store), which refused commands must not touch."""
    project.workflows(OK)
    project.dstack("run", "ok", check=True)
    return project


# --- YAML that would expand without bound -------------------------------------------------


def laughs(levels: int, width: int) -> list[str]:
    """Lines of anchors, each holding ``width`` aliases of the one before: ``width ** levels``
    strings once expanded, from a few hundred bytes."""
    lines = ["  l0: &l0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return lines


BOMBS = {
    "workflows": "workflows:\n  - name: ok\n    commands: [echo ok]\n    env:\n"
    + "\n".join("  " + line for line in laughs(9, 9))
    + "\n",
    "variables": "variables:\n" + "\n".join(laughs(9, 9)) + "\n",
    "config": "backends:\n  ssh:\n    hosts: []\n    more:\n"
    + "\n".join("    " + line for line in laughs(9, 9))
    + "\n",
}


@pytest.mark.parametrize("which", FILES)
def test_a_billion_laughs_file_is_refused_in_bounded_memory(seeded: Project, which: str) -> None:
    """9 ** 9 strings once expanded; the CLI runs with 1 GB of address space, which expanding
    them (on the way to validating them) would need many times over."""
    put(seeded, which, BOMBS[which].encode())
    runs = recorded_runs(seeded)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    done = subprocess.run(
        [sys.executable, "-m", "dstack", "run", "ok"],
        cwd=seeded.root,
        env=seeded.env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{FILES[which]}:" in done.stderr
    assert "more than 100,000 values once its aliases (*name) are expanded" in done.stderr
    assert "billion laughs" in done.stderr
    assert recorded_runs(seeded) == runs


def test_an_alias_inside_itself_and_deep_nesting_are_refused(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: ok\n    commands: &loop [echo, *loop]\n")
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:3: an alias (*name) refers to a list or mapping that " in err
    assert "holds it, which would never end" in err
    seeded.workflows("workflows:\n  - name: ok\n    commands: " + "[" * 500 + "]" * 500 + "\n")
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:3: lists and mappings are nested more than 100 levels" in err


# --- files that are not YAML text, too large, or cannot be read ----------------------------


@pytest.mark.parametrize("which", FILES)
def test_a_file_that_is_not_utf8_names_the_line(seeded: Project, which: str) -> None:
    put(seeded, which, b"# one\n# two\nx: caf\xe9\n")
    err = refused(seeded, "run", "ok")
    assert f"{FILES[which]}:3: byte 0xe9 is not UTF-8 text" in err
    assert "save the file as UTF-8" in err


@pytest.mark.parametrize("which", FILES)
def test_a_binary_file_is_refused(seeded: Project, which: str) -> None:
    put(seeded, which, b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe")
    err = refused(seeded, "run", "ok")
    assert f"{FILES[which]}:1: the file holds NUL bytes: it is binary, not YAML text" in err


def test_a_control_character_is_refused_with_its_line(seeded: Project) -> None:
    seeded.workflows("workflows:\n  - name: ok\n    commands: [echo \x1b[31mred]\n")
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:3: character U+001B is not allowed in YAML" in err


@pytest.mark.parametrize("which", FILES)
def test_a_file_over_one_megabyte_is_refused_before_it_is_read(seeded: Project, which: str) -> None:
    put(seeded, which, b"# padding\n" * 110_000)
    err = refused(seeded, "run", "ok")
    assert f"{FILES[which]}: is 1,100,000 bytes" in err
    assert "at most 1,048,576 bytes (1 MB)" in err


@pytest.mark.parametrize("which", FILES)
def test_a_folder_in_place_of_a_file_is_a_clear_read_error(seeded: Project, which: str) -> None:
    path = put(seeded, which, b"")
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")
    err = refused(seeded, "run", "ok")
    assert f"{FILES[which]}: is a folder, not a file" in err and "move the folder away" in err


def test_a_pipe_in_place_of_the_variables_file_does_not_block(seeded: Project) -> None:
    """Opening a FIFO for reading waits for a writer forever; it is refused before that."""
    os.mkfifo(seeded.root / FILES["variables"])
    err = refused(seeded, "run", "ok")
    assert ".dstack/variables.yaml: is not a regular file" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_workflow_file_the_user_cannot_read() -> None:
    """A real permission error: the CLI runs as `nobody`, the file is root's and 0600."""
    base = Path(tempfile.mkdtemp(prefix="dstack-perm-"))
    try:
        project = Project(base / "repo", base / "home")
        project.workflows(OK).chmod(0o600)
        for path in (base, project.root, project.root / ".dstack"):
            path.chmod(0o755)
        project.home.mkdir()
        os.chown(project.home, 65534, 65534)
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            + [sys.executable, "-m", "dstack", "run", "ok"],
            cwd=project.root,
            env=project.env(HOME=str(base)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert ".dstack/workflows.yaml: cannot read the file (permission denied)" in done.stderr
        assert "chmod u+r" in done.stderr
        assert not (project.home / "runs").exists()
    finally:
        shutil.rmtree(base)


# --- wrong types anywhere -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body,expected",
    [
        ("  - name: 5\n    commands: [x]\n", ":2: the workflow name '5' is int 5, not text"),
        ("  - name: ok\n    commands: {a: 1}\n", "field 'commands'"),
        ("  - name: ok\n    commands: [x]\n    environment: {A: [1]}\n", "is a list or mapping"),
        ("  - name: ok\n    commands: [x]\n    resources: [cpu]\n", "field 'resources'"),
        ("  - name: ok\n    commands: [x]\n    deps: 7\n", "field 'deps'"),
        ("  - name: ok\n    commands: [x]\n    ? [a]\n    : 1\n", "a key must be plain text"),
        ("  - name: ok\n    commands: [x]\n    when: !!timestamp 2022-13-40\n", "not a valid"),
        (
            "  - name: ok\n    commands: [x]\n    when: !!bool maybe\n",
            "'maybe' is not a valid bool",
        ),
        ("  - name: ok\n    commands: [x]\n    cpu: " + "9" * 5000 + "\n", "is not a valid int"),
        ("  - name: ok\n    commands: !!set [x]\n", ":3: set needs a mapping"),
    ],
)
def test_wrong_types_in_a_workflow(seeded: Project, body: str, expected: str) -> None:
    seeded.workflows("workflows:\n" + body)
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:" in err and expected in err, err


@pytest.mark.parametrize(
    "text,expected",
    [
        ("- variables\n", ":1: the file must hold one key, 'variables'"),
        ("variables: [a, b]\n", ":1: 'variables' must be a mapping"),
        ("variables:\n  lr: [1, 2]\n", ":2: variable 'lr' holds a list"),
        ("variables:\n  lr:\n", ":2: variable 'lr' holds nothing"),
        ("variables:\n  lr: !!binary aGk=\n", ":2: variable 'lr' holds a bytes"),
        ("variables:\n  5: x\n", ":2: the variable name '5' is int 5, not text"),
        ("variables:\n  ok:\n    lr: {a: 1}\n", ":3: variable 'lr' holds a mapping"),
        ("variables:\n  'a b': 1\n", ":2: the variable name 'a b' may hold only"),
    ],
)
def test_wrong_types_in_the_variables_file(seeded: Project, text: str, expected: str) -> None:
    put(seeded, "variables", text.encode())
    err = refused(seeded, "run", "ok")
    assert ".dstack/variables.yaml" + expected in err, err


@pytest.mark.parametrize(
    "text,expected",
    [
        ("- backends\n", ":1: expected a mapping of settings"),
        ("backends: [local]\n", "field 'backends'"),
        ("backends:\n  ssh:\n    hosts:\n      - {name: a/b, host: h}\n", "the host name 'a/b'"),
        ("store: {url: 5}\n", "field 'store.url'"),
    ],
)
def test_wrong_types_in_config_yaml(seeded: Project, text: str, expected: str) -> None:
    put(seeded, "config", text.encode())
    err = refused(seeded, "run", "ok")
    assert str(seeded.home / "config.yaml") in err and expected in err, err


# --- names -----------------------------------------------------------------------------------

LONG = "n" * 101


def test_an_over_long_workflow_name(seeded: Project) -> None:
    seeded.workflows(OK + f"  - name: {LONG}\n    commands: [x]\n")
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:4: the workflow name 'nnnn" in err
    assert "is 101 characters long; at most 100 are allowed" in err


def test_an_over_long_variable_name(seeded: Project) -> None:
    put(seeded, "variables", f"variables:\n  {LONG}: 1\n".encode())
    err = refused(seeded, "run", "ok")
    assert ".dstack/variables.yaml:2: the variable name" in err and "101 characters" in err


@pytest.mark.parametrize("tag", [LONG, "a/b", "..", ".hidden", "a b", "tab\there", "x\x1b[2J"])
def test_a_tag_name_that_cannot_be_a_store_key(seeded: Project, tag: str) -> None:
    for args in (("run", "ok", "-t", tag), ("tags", "add", tag, "-a", ".dstack")):
        err = refused(seeded, *args)
        assert "The tag name '" in err and "\x1b" not in err
        assert "letters, digits, '-', '_' and '.'" in err
    seeded.workflows(
        OK + f"  - name: user\n    commands: [x]\n    deps: [{{tag: {json.dumps(tag)}}}]\n"
    )
    err = refused(seeded, "run", "user")
    assert ":6: workflow 'user', field 'deps[0].tag'" in err


# --- tags read from the store ------------------------------------------------------------


def test_a_malformed_tag_in_the_store_is_skipped_with_a_warning(seeded: Project) -> None:
    seeded.dstack("tags", "add", "good", "-r", seeded.last_run()["name"], check=True)
    tags = seeded.home / "store" / "tags"
    bad = {
        "good/99999999999999999999-00000000.json": b"{not json",  # the latest event of good
        "broken/00000000000000000001-00000000.json": b"[1, 2]",
        "typed/00000000000000000001-00000000.json": json.dumps(
            {
                "tag": "typed",
                "action": "set",
                "run_name": 5,
                "manifests": {},
                "created_at": 1.0,
                "by": "x",
            }
        ).encode(),
        ".hidden/00000000000000000001-00000000.json": json.dumps(
            {
                "tag": ".hidden",
                "action": "set",
                "run_name": "r",
                "manifests": {},
                "created_at": 1.0,
                "by": "x",
            }
        ).encode(),
        "escape/00000000000000000001-00000000.json": json.dumps(
            {
                "tag": "escape",
                "action": "set",
                "run_name": "r",
                "manifests": {"ok": "../../etc/passwd"},
                "created_at": 1.0,
                "by": "x",
            }
        ).encode(),
    }
    for key, data in bad.items():
        (tags / key).parent.mkdir(exist_ok=True)
        (tags / key).write_bytes(data)
    done = seeded.dstack("tags", "list", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert [t["name"] for t in json.loads(done.stdout)] == ["good"], "its latest valid event"
    for key in bad:
        assert f"dstack: warning: The tag event 'tags/{key}' in the store" in done.stderr, key
    assert "is not JSON" in done.stderr and "has int as 'run_name'" in done.stderr
    assert "has a tag name that may hold only" in done.stderr
    assert "manifests that are not keys of manifests" in done.stderr
    history = seeded.dstack("tags", "history", "good", "--json", check=True)
    assert len(json.loads(history.stdout)) == 1, "the valid event only"
    assert f"'tags/good/{next(iter(bad)).split('/')[1]}'" in history.stderr
    seeded.workflows(OK + "  - name: user\n    commands: [ls]\n    deps: [{tag: good}]\n")
    assert seeded.dstack("run", "user").returncode == 0, "the tag still resolves"


# --- store URLs ------------------------------------------------------------------------------


def test_a_relative_file_store_url_is_refused_with_the_absolute_one(seeded: Project) -> None:
    err = refused(seeded, "init", "--store", "file://shared/store")
    assert "'file://shared/store' names a relative path" in err
    assert f"file://{seeded.root}/shared/store" in err
    assert not (seeded.home / "config.yaml").exists() and not (seeded.root / "shared").exists()
    put(seeded, "config", b"store:\n  url: file://shared/store\n")
    err = refused(seeded, "run", "ok")
    assert f"{seeded.home / 'config.yaml'}:2: field 'store.url'" in err
    assert "names a relative path" in err


# --- `dstack run` options and run.args ---------------------------------------------------------

SHOW_ARGS = """
workflows:
  - name: show
    commands: ['printf "%s|" ${{ run.args }}; echo "lr=${{ lr }}"']
"""


@pytest.mark.parametrize(
    "args,closest",
    [
        (["--detatch"], "--detach"),
        (["--no-cahce"], "--no-cache"),
        (["--bakend", "aws"], "--backend"),
        (["pos", "--no-wiat"], "--no-wait"),
    ],
)
def test_a_mistyped_run_option_names_the_closest_one(
    seeded: Project, args: list[str], closest: str
) -> None:
    seeded.workflows(SHOW_ARGS)
    put(seeded, "variables", b"variables:\n  lr: 1\n")
    err = refused(seeded, "run", "show", *args)
    assert f"Unknown option {args[-1] if args[0] == 'pos' else args[0]}" in err
    assert f"did you mean {closest}?" in err and "put it after `--`: dstack run show --" in err
    assert "did you mean --backend?" in refused(seeded, "plan", "show", "--bakend", "aws")


def test_run_args_the_2022_way_and_after_dashes(seeded: Project) -> None:
    seeded.workflows(SHOW_ARGS)
    put(seeded, "variables", b"variables:\n  lr: 1\n  detatch: 0\n")
    done = seeded.dstack("run", "show", "--lr", "0.5", "pos", "--epochs", "3", check=True)
    assert done.stdout == "pos|--epochs|3|lr=0.5\n"
    done = seeded.dstack("run", "show", "--", "--detach", "--lr", "7", "--", "x y", check=True)
    assert done.stdout == "--detach|--lr|7|--|x y|lr=1\n", "after -- all is passed untouched"
    done = seeded.dstack("run", "show", "--detatch", "2", check=True)
    assert done.stdout == "|lr=1\n", "a declared variable is not a typo"
    assert seeded.inspect(seeded.last_run()["name"])["variables"]["show"]["detatch"] == "2"


@pytest.mark.parametrize("args", ["${{ epochs }}", "10"])
def test_a_number_as_the_whole_of_args(project: Project, args: str) -> None:
    project.workflows(
        f"workflows:\n  - name: py\n    provider: python\n    script: a.py\n    args: {args}\n"
    )
    project.write(".dstack/variables.yaml", "variables:\n  epochs: 10\n")
    project.write("a.py", "import sys\nprint(sys.argv[1:])\n")
    done = project.dstack("run", "py", check=True)
    assert done.stdout == "['10']\n"
    if "epochs" in args:
        assert project.dstack("run", "py", "--epochs", "3", check=True).stdout == "['3']\n"


# --- environment variable names ------------------------------------------------------------


@pytest.mark.parametrize(
    "env,expected",
    [
        ("env: [PATH=/tmp/evil]", "'PATH' cannot be set: it would replace the $PATH"),
        ("env: [HOME]", "'HOME' cannot be set: it would replace the $HOME"),
        ("environment: {SHELL: /bin/sh}", "'SHELL' cannot be set"),
        ("environment: {DSTACK_RUN: x}", "'DSTACK_RUN' cannot be set: dstack sets that"),
        ("environment: {PORT_0: 80}", "'PORT_0' cannot be set: dstack sets that"),
        ("environment: {DSTACK_MASK_VARS: ''}", "'DSTACK_MASK_VARS' cannot be set"),
        ("environment: {'A B': x}", "'A B' cannot be set: it is not a valid"),
        ("env: ['1X=y']", "'1X' cannot be set: it is not a valid"),
        ("env: ['X;touch /tmp/pwned=1']", "cannot be set: it is not a valid"),
    ],
)
def test_env_keys_are_identifiers_and_not_the_hosts_or_dstacks(
    seeded: Project, env: str, expected: str
) -> None:
    seeded.workflows(f"workflows:\n  - name: ok\n    commands: [echo ok]\n    {env}\n")
    err = refused(seeded, "run", "ok")
    assert ".dstack/workflows.yaml:4: workflow 'ok', field 'env" in err and expected in err, err
    assert "PATH, HOME, SHELL, IFS, BASH_ENV, DSTACK_* or PORT_N" in err


def test_a_2022_file_setting_pythonunbuffered_still_runs(seeded: Project) -> None:
    seeded.workflows(
        "workflows:\n  - name: ok\n    env: [PYTHONUNBUFFERED=1]\n"
        "    commands: [echo $PYTHONUNBUFFERED]\n"
    )
    assert seeded.dstack("run", "ok", check=True).stdout == "1\n"


def test_a_run_name_that_is_not_a_name_is_not_found_and_reaches_no_store_key(
    seeded: Project,
) -> None:
    for name in ("../x", "a/b", ".hidden"):
        done = seeded.dstack("inspect", name)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "No run named" in done.stderr and "tampered" not in done.stderr, done.stderr


def test_pool_add_refuses_a_host_name_that_is_not_a_name(seeded: Project) -> None:
    err = refused(seeded, "pool", "add", "../gpu", "--host", "127.0.0.1")
    assert "The host name '../gpu' may hold only letters" in err
