"""YAML loading that remembers where every key and item came from, so errors can name the line,
and that is bounded: a file of at most 1 MB (dstack.spec.files), nested at most MAX_DEPTH
levels, holding at most MAX_NODES values once its aliases are expanded (a "billion laughs"
file of a few lines would otherwise expand to billions of strings when it is used)."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from dstack.errors import SpecError
from dstack.spec.files import MAX_FILE_BYTES, check_source, too_large

MAX_NODES = 100_000  # values (scalars, lists, mappings) in one file, aliases expanded
MAX_DEPTH = 100  # lists and mappings inside each other


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
    """SafeLoader that builds LineDict/LineList, refuses duplicate and unhashable keys, and
    stops composing a document that is too deep or too large, aliases expanded."""

    source = ""
    depth = 0
    nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.nodes += 1
        self.depth += 1
        if self.depth > MAX_DEPTH or self.nodes > MAX_NODES:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise _too_big(self.source, line, self.depth > MAX_DEPTH)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, self.source)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, LookupError, AttributeError):
            # PyYAML's scalar constructors fail so on a value that its tag does not fit
            # (`!!int ''`, `!!bool x`, `!!timestamp 2001-13-45`, an int of 5,000 digits)
            if not isinstance(node, yaml.ScalarNode):
                raise
            raise SpecError(
                f"{self.source}:{node.start_mark.line + 1}: {node.value!r:.60} is not a valid "
                f"{node.tag.rpartition(':')[2]}.",
                hint="quote it to keep it as text",
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        _expect(node, yaml.MappingNode, "a mapping", self.source)
        self.flatten_mapping(node)
        result = LineDict()
        result.file, result.line, result.key_lines = self.source, node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                raise SpecError(
                    f"{self.source}:{line}: a key must be plain text or a number, "
                    f"not a {'list' if isinstance(key, list) else 'mapping'}.",
                    hint="check the indentation and the '?' or '{' on that line",
                )
            if key in result:
                raise SpecError(
                    f"{self.source}:{line}: key {str(key)[:60]!r} is given twice "
                    f"in one mapping (first on line {result.key_lines[key]}).",
                    hint="remove one of them",
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        _expect(node, yaml.SequenceNode, "a list", self.source)
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.file, result.line = self.source, node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_sequence)


def _expect(node: yaml.Node, kind: type[yaml.Node], what: str, source: str) -> None:
    """A tag of a list or mapping (`!!set`, `!!seq`) on a node of another kind."""
    if not isinstance(node, kind):
        raise SpecError(
            f"{source}:{node.start_mark.line + 1}: {node.tag.rpartition(':')[2]} needs {what}.",
            hint="remove the tag (!!...) or give it the value it needs",
        )


def _too_big(source: str, line: int, deep: bool) -> SpecError:
    if deep:
        return SpecError(
            f"{source}:{line}: lists and mappings are nested more than {MAX_DEPTH} levels deep.",
            hint="dstack's files need a few levels; check the brackets and indentation",
        )
    return SpecError(
        f"{source}:{line}: the file holds more than {MAX_NODES:,} values once its aliases "
        "(*name) are expanded.",
        hint="dstack's files need far fewer; an alias repeated inside other aliases multiplies "
        "its values (a YAML 'billion laughs' file)",
    )


def _expanded_size(root: yaml.Node, source: str) -> int:
    """How many values ``root`` holds with every alias expanded, counted without expanding
    (each node once, in document order); a node that holds an alias of itself is refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise SpecError(
                f"{source}:{node.start_mark.line + 1}: an alias (*name) refers to a list or "
                "mapping that holds it, which would never end.",
                hint="an alias may only repeat a value defined before and outside it",
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_NODES:
            raise _too_big(source, node.start_mark.line + 1, deep=False)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file; any problem (unreadable, too large, not UTF-8 text, invalid YAML,
    too many values) becomes a SpecError that names the file and, where known, the line."""
    name = display or str(path)
    text = _read_text(path, name)
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


def _read_text(path: Path, name: str) -> str:
    """The file as text: a readable file of at most MAX_FILE_BYTES, UTF-8, printable."""
    check_source(path, name)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise SpecError(f"{name}: cannot read the file ({e.strerror}).") from None
    if len(data) > MAX_FILE_BYTES:  # it grew since it was checked
        raise too_large(name, len(data))
    nul = data.find(b"\0")
    if nul >= 0:
        raise SpecError(
            f"{name}:{_line_at(data, nul)}: the file holds NUL bytes: it is binary, not YAML text.",
            hint="dstack reads it as YAML; replace it with a text file",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"{name}:{_line_at(data, e.start)}: byte 0x{data[e.start]:02x} is not UTF-8 text.",
            hint="save the file as UTF-8",
        ) from None
    odd = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if odd:
        raise SpecError(
            f"{name}:{text.count(chr(10), 0, odd.start()) + 1}: character "
            f"U+{ord(odd.group()):04X} is not allowed in YAML.",
            hint="remove it; YAML files hold printable text, tabs and newlines",
        )
    return text


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def line_of(node: Any, key: Any = None) -> int:
    """The line of ``key`` inside ``node`` (or of the node itself) when known, else 0."""
    if isinstance(node, LineDict):
        return node.key_lines.get(key, node.line) if key is not None else node.line
    if isinstance(node, LineList):
        if isinstance(key, int) and 0 <= key < len(node.item_lines):
            return node.item_lines[key]
        return node.line
    return 0
