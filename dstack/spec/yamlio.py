"""YAML loading that remembers where every key and item came from, so errors can name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dstack.errors import SpecError


class LineDict(dict):  # type: ignore[type-arg]
    """A mapping from YAML that knows the file and the line of each key."""

    file: str = ""
    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):  # type: ignore[type-arg]
    """A sequence from YAML that knows the line of each item."""

    file: str = ""
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList and refuses duplicate keys."""

    source = ""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        self.flatten_mapping(node)
        result = LineDict()
        result.file, result.line, result.key_lines = self.source, node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in result:
                raise SpecError(
                    f"{self.source}:{key_node.start_mark.line + 1}: key '{key}' is given twice "
                    f"in one mapping (first on line {result.key_lines[key]}).",
                    hint="remove one of them",
                )
            result[key] = self.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:  # type: ignore[override]
        result = LineList(self.construct_object(child, deep=True) for child in node.value)  # type: ignore[no-untyped-call]
        result.file, result.line = self.source, node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_sequence)


def load_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file; syntax errors become a SpecError that shows the line."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{name}: cannot read the file ({e.strerror}).") from e
    loader = _Loader(text)
    loader.source = name
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        snippet = text.splitlines()[line - 1].rstrip() if 0 < line <= len(text.splitlines()) else ""
        raise SpecError(
            f"{name}:{line}: invalid YAML: {e.problem or e.context}.\n    {line} | {snippet}",
            hint="check indentation and quoting on that line (values with ': ' or '#' need quotes)",
        ) from e
    except yaml.YAMLError as e:
        raise SpecError(f"{name}: invalid YAML: {e}") from e
    finally:
        loader.dispose()


def line_of(node: Any, key: Any = None) -> int:
    """The line of ``key`` inside ``node`` (or of the node itself) when known, else 0."""
    if isinstance(node, LineDict):
        return node.key_lines.get(key, node.line) if key is not None else node.line
    if isinstance(node, LineList):
        if isinstance(key, int) and 0 <= key < len(node.item_lines):
            return node.item_lines[key]
        return node.line
    return 0
