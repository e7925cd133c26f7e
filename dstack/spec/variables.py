"""`.dstack/variables.yaml` and `${{ name }}` substitution; an undefined name is an error, never ''."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from dstack.errors import SpecError
from dstack.spec.names import shown, variable_problem
from dstack.spec.yamlio import LineDict, LineList, line_of, load_yaml

_REF = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_EXAMPLE = "variables:\n  lr: 0.01\n  train:\n    epochs: 10"


@dataclass(frozen=True)
class Variables:
    """Declared defaults: globals plus per-workflow maps."""

    globals: dict[str, Any] = field(default_factory=dict)
    per_workflow: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_workflow(self, name: str, overrides: dict[str, str]) -> dict[str, Any]:
        values = {**self.globals, **self.per_workflow.get(name, {})}
        values.update({k: v for k, v in overrides.items() if k in values})
        return values

    def declared(self, workflows: Iterable[str]) -> set[str]:
        names = set(self.globals)
        for wf in workflows:
            names |= set(self.per_workflow.get(wf, {}))
        return names


def load_variables(path: Path, workflow_names: set[str]) -> Variables:
    if not path.exists():
        return Variables()
    display = f".dstack/{path.name}"
    data = load_yaml(path, display)
    if data is None:
        return Variables()
    if not isinstance(data, dict) or set(data) - {"variables"}:
        raise SpecError(
            f"{display}:1: the file must hold one key, 'variables', with a mapping.",
            hint=_EXAMPLE,
        )
    section = data.get("variables") or {}
    if not isinstance(section, dict):
        raise SpecError(
            f"{display}:{line_of(data, 'variables')}: 'variables' must be a mapping.",
            hint=_EXAMPLE,
        )
    globals_: dict[str, Any] = {}
    per_workflow: dict[str, dict[str, Any]] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            if key not in workflow_names:
                from dstack.spec.suggest import did_you_mean

                raise SpecError(
                    f"{display}:{line_of(section, key)}: variables for {shown(key)}, "
                    "but no workflow has that name.",
                    hint=did_you_mean(str(key), workflow_names)
                    or "a mapping holds one workflow's variables",
                )
            per_workflow[key] = {k: _value(value, k, display) for k in value}
        else:
            globals_[_name(section, key, display)] = _value(section, key, display)
    return Variables(globals_, per_workflow)


def _name(section: dict[Any, Any], key: Any, display: str) -> str:
    problem = variable_problem(key)
    if problem:
        raise SpecError(
            f"{display}:{line_of(section, key)}: the variable name {shown(key)} {problem}.",
            hint=_EXAMPLE,
        )
    return str(key)


def _value(section: dict[Any, Any], key: Any, display: str) -> str | int | float | bool:
    """A variable's value: text, a number or true/false (a date is kept as written); a list,
    a mapping or nothing at all cannot stand in `${{ name }}`."""
    name, value = _name(section, key, display), section[key]
    if isinstance(value, (str, int, float)):  # bool is an int
        return value
    if isinstance(value, (date, datetime)):
        return str(value)
    kind = {type(None): "nothing", LineList: "a list", LineDict: "a mapping"}.get(
        type(value), f"a {type(value).__name__}"
    )
    raise SpecError(
        f"{display}:{line_of(section, key)}: variable '{name}' holds {kind}; a variable is "
        "text, a number or true/false.",
        hint="quote it to make it text, e.g. "
        + (f"{name}: ''" if value is None else f"{name}: '...'"),
    )


def split_run_args(tokens: list[str], declared: set[str]) -> tuple[dict[str, str], list[str]]:
    """`--lr 0.1` for a declared variable becomes an override; everything else is run.args,
    and everything after `--` is run.args untouched."""
    overrides: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            rest.extend(tokens[i + 1 :])
            break
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            key = next(
                (
                    k
                    for k in (name, name.replace("-", "_"), name.replace("_", "-"))
                    if k in declared
                ),
                None,
            )
            if key is not None:
                if eq:
                    overrides[key] = value
                elif i + 1 < len(tokens) and tokens[i + 1] != "--":
                    overrides[key] = tokens[i + 1]
                    i += 1
                else:
                    raise SpecError(
                        f"--{name} needs a value.", hint=f"dstack run WORKFLOW --{name} VALUE"
                    )
                i += 1
                continue
        rest.append(token)
        i += 1
    return overrides, rest


SHELL_KEYS = frozenset({"commands", "setup", "before_run", "args"})  # read by a shell or shlex


def substitute(node: Any, values: dict[str, Any], run_args: list[str], where: str) -> Any:
    """Replace `${{ name }}` in every string of a workflow, keeping LineDict/LineList positions.

    Where a shell reads the text (commands, setup, args), each value goes in quoted, as one
    word: a value such as `x; rm -rf ~` stays text. `${{ run.args }}` goes in as the words it
    was given, each quoted."""
    scope = {**values, "run.args": shlex.join(run_args)}

    def resolve(text: str, line: int, shell: bool) -> Any:
        def lookup(name: str) -> Any:
            key = name[len("variables.") :] if name.startswith("variables.") else name
            if key not in scope:
                from dstack.spec.suggest import did_you_mean

                raise SpecError(
                    f"{where}:{line}: variable '{name}' is not defined.",
                    hint=did_you_mean(key, scope)
                    or "declare it in .dstack/variables.yaml or pass it as --NAME VALUE",
                )
            return scope[key]

        def quoted(name: str) -> Any:
            value = lookup(name)
            if not shell or name == "run.args" or not isinstance(value, str):
                return value  # numbers and true/false need no quotes
            return shlex.quote(value)

        whole = _REF.fullmatch(text.strip())
        if whole:
            return quoted(whole.group(1))
        return _REF.sub(lambda m: str(quoted(m.group(1))), text)

    def walk(value: Any, line: int, shell: bool = False) -> Any:
        if isinstance(value, str):
            return resolve(value, line, shell) if "${{" in value else value
        if isinstance(value, LineDict):
            out = LineDict()
            out.file, out.line, out.key_lines = value.file, value.line, value.key_lines
            for k, v in value.items():
                # a list of args is argv already (each item one word): only text is split
                read_by_shell = k in SHELL_KEYS and not (k == "args" and isinstance(v, list))
                out[k] = walk(v, line_of(value, k), shell or read_by_shell)
            return out
        if isinstance(value, LineList):
            out_list = LineList(walk(v, line_of(value, i), shell) for i, v in enumerate(value))
            out_list.file, out_list.line, out_list.item_lines = (
                value.file,
                value.line,
                value.item_lines,
            )
            return out_list
        return value

    return walk(node, line_of(node))
