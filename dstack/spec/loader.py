"""Find `.dstack/`, merge its workflow files, and turn raw YAML into validated Workflow models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dstack.errors import NotFoundError, SpecError
from dstack.spec.files import variables_file, workflow_files
from dstack.spec.models import ALIASES, RESOURCE_ALIASES, Resources, Workflow
from dstack.spec.names import name_problem, shown
from dstack.spec.suggest import did_you_mean
from dstack.spec.variables import Variables, load_variables, substitute
from dstack.spec.yamlio import LineDict, LineList, line_of, load_yaml

WORKFLOW_KEYS = sorted({f.alias or n for n, f in Workflow.model_fields.items()} | set(ALIASES))
RESOURCE_KEYS = sorted(set(Resources.model_fields) | set(RESOURCE_ALIASES))
ENV_HINT = (
    "env: [NAME=value, NAME] or environment: {NAME: value}; names are letters, digits and "
    "'_' (not first a digit), and not PATH, HOME, SHELL, IFS, BASH_ENV, DSTACK_* or PORT_N, which "
    "the host or dstack sets"
)


@dataclass(frozen=True)
class RawWorkflow:
    """A workflow as written, before variables are substituted and types checked."""

    name: str
    data: LineDict
    file: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.data.line}"


class Project:
    """The workflows and variables of one repository."""

    def __init__(self, root: Path, raw: dict[str, RawWorkflow], variables: Variables) -> None:
        self.root = root
        self.raw = raw
        self.variables = variables

    @classmethod
    def load(cls, root: Path) -> Project:
        raw: dict[str, RawWorkflow] = {}
        for path in workflow_files(root):
            display = str(path.relative_to(root))
            for item in _workflow_items(load_yaml(path, display), display):
                name = item["name"]
                if name in raw:
                    first = raw[name]
                    raise SpecError(
                        f"{display}:{item.line}: workflow '{name}' is defined twice: "
                        f"here and in {first.where}.",
                        hint="workflow names must be unique across .dstack/workflows.yaml "
                        "and .dstack/workflows/*.yaml; rename one",
                    )
                raw[name] = RawWorkflow(name, item, display)
        return cls(root, raw, load_variables(variables_file(root), set(raw)))

    def require(self, name: str) -> RawWorkflow:
        if name in self.raw:
            return self.raw[name]
        known = ", ".join(sorted(self.raw)) or "none"
        raise NotFoundError(
            f"Unknown workflow '{name}'. Workflows in .dstack/: {known}.",
            hint=did_you_mean(name, self.raw) or "see `dstack workflows`",
        )

    def workflow(self, name: str, overrides: dict[str, str], run_args: list[str]) -> Workflow:
        """Substitute variables into the named workflow and validate it."""
        raw = self.require(name)
        values = self.variables.for_workflow(name, overrides)
        data = substitute(raw.data, values, run_args, raw.file)
        return validate_workflow(data, raw.file)


def _workflow_items(data: Any, display: str) -> list[LineDict]:
    if data is None:
        return []
    if not isinstance(data, LineDict):
        raise SpecError(
            f"{display}:1: expected a mapping with a 'workflows' list.",
            hint="workflows:\n  - name: train\n    commands: [python train.py]",
        )
    for key in data:
        if key != "workflows":
            raise SpecError(
                f"{display}:{line_of(data, key)}: unknown top-level key '{key}'.",
                hint=did_you_mean(str(key), ["workflows"]) or "only 'workflows' is allowed",
            )
    items = data.get("workflows") or []
    if not isinstance(items, LineList):
        raise SpecError(
            f"{display}:{line_of(data, 'workflows')}: 'workflows' must be a list.",
            hint="start each workflow with '- name: ...'",
        )
    for index, item in enumerate(items):
        line = line_of(items, index)
        if not isinstance(item, LineDict):
            raise SpecError(f"{display}:{line}: each workflow must be a mapping with a 'name'.")
        if "name" not in item or item["name"] in ("", None):
            raise SpecError(
                f"{display}:{line}: workflow without a 'name'.",
                hint="add '- name: NAME' as the first key",
            )
        problem = name_problem(item["name"])
        if problem:
            raise SpecError(
                f"{display}:{line_of(item, 'name')}: the workflow name {shown(item['name'])} "
                f"{problem}.",
                hint="workflow names are also folder names and keys in the store; "
                "e.g. name: train-v2",
            )
    return list(items)


def _fold_aliases(
    data: LineDict, aliases: dict[str, str], where: str
) -> tuple[LineDict, dict[str, str]]:
    """Rename alias keys to canonical ones; the map lets errors show the key the user wrote."""
    out = LineDict()
    out.file, out.line, out.key_lines = data.file, data.line, {}
    written: dict[str, str] = {}
    for key, value in data.items():
        canonical = aliases.get(key, key) if isinstance(key, str) else key
        if canonical in out:
            if canonical == "env":  # env list + environment map merge
                out["env"] = _merge_env(out["env"], value, f"{where}:{line_of(data, key)}")
                continue
            raise SpecError(
                f"{where}:{line_of(data, key)}: '{key}' and '{written[canonical]}' mean the same; "
                "give only one."
            )
        out[canonical] = value
        out.key_lines[canonical] = line_of(data, key)
        written[canonical] = key
    return out, written


def _merge_env(first: Any, second: Any, where: str) -> dict[str, Any]:
    """`env` (a list or a mapping) and `environment` (a mapping) given together: one mapping."""
    from dstack.spec.models import _as_env

    try:
        a, b = _as_env(first), _as_env(second)
    except ValueError as e:
        raise SpecError(f"{where}: field 'env': {e}.", hint=ENV_HINT) from None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        raise SpecError(
            f"{where}: 'env' and 'environment' must each be a list of NAME=value or a mapping.",
            hint=ENV_HINT,
        )
    return {**a, **b}


def validate_workflow(data: LineDict, file: str) -> Workflow:
    folded, written = _fold_aliases(data, ALIASES, file)
    if isinstance(folded.get("resources"), LineDict):
        resources, res_written = _fold_aliases(folded["resources"], RESOURCE_ALIASES, file)
        folded["resources"] = resources
    else:
        res_written = {}
    try:
        return Workflow.model_validate(dict(folded))
    except ValidationError as e:
        raise SpecError(
            _describe(e, folded, file, written, res_written), hint=_hint(e, folded)
        ) from None


def _describe(
    e: ValidationError,
    data: LineDict,
    file: str,
    written: dict[str, str],
    res_written: dict[str, str],
) -> str:
    name = data.get("name", "?")
    lines = []
    for err in e.errors():
        node: Any = data
        line = data.line
        shown: list[str] = []
        for depth, part in enumerate(err["loc"]):
            if isinstance(node, dict) and part in node:
                line = line_of(node, part) or line
                renamed = written if depth == 0 else res_written if depth == 1 else {}
                shown.append(renamed.get(str(part), str(part)))
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line = line_of(node, part) or line
                shown.append(f"[{part}]")
                node = node[part]
            elif (
                err["type"] == "extra_forbidden"
                or isinstance(part, str)
                and not part.startswith(("function", "union"))
            ):
                shown.append(str(part))
        field = ".".join(s for s in shown).replace(".[", "[") or "workflow"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required"
        lines.append(f"{file}:{line}: workflow '{name}', field '{field}': {message}")
    return "\n".join(lines)


def _hint(e: ValidationError, data: LineDict) -> str | None:
    for err in e.errors():
        if err["loc"][:1] == ("env",):
            return ENV_HINT
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            keys = (
                RESOURCE_KEYS
                if err["loc"][0] == "resources" and len(err["loc"]) > 1
                else WORKFLOW_KEYS
            )
            return did_you_mean(key, keys) or "allowed keys: " + ", ".join(keys)
    return "see `dstack schema` for the format"
