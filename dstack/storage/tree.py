"""What a manifest read from a store may ask for, checked before anything is used.

A shared store is written by teammates, and anyone with write access can put any bytes there.
So every value of a manifest is checked at the boundary: digests are 64 lowercase hex
characters before they become keys or file names; entry paths are relative, normalised and
free of '..', NUL and absolute parts; modes are permission bits only. Links are judged against
the final tree a job gets (its snapshot and all its inputs, later layers replacing earlier
ones): no file may be written through a link or inside a file, and every link, following
chains across manifests, must resolve inside the tree. A job's tree is checked whole by
``final_tree`` before a single file of it is written, here or on a host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from dstack.errors import StoreError
from dstack.spec.names import shown

if TYPE_CHECKING:
    from dstack.storage.manifest import Entry

SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_PATH = 4096  # bytes, as Linux's PATH_MAX
MAX_LINK_HOPS = 40  # as Linux's limit on links followed in one lookup
PERMISSIONS = 0o777
TAMPERED = "the manifest in the store was tampered with or damaged; nothing was written"


def check_sha(value: object, where: str) -> str:
    """``value`` when it is a sha256 digest as dstack writes them (64 lowercase hex)."""
    if isinstance(value, str) and SHA256.fullmatch(value):
        return value
    raise StoreError(f"{where}: {shown(value)} is not a sha256 digest.", hint=TAMPERED)


UNSAFE_PATH = re.compile(r"^/|/$|//|(^|/)\.\.?(/|$)|[\x00-\x1f\x7f]")


def check_path(value: object, where: str) -> str:
    """``value`` when it is a safe entry path: relative, normalised ('a/b', never 'a//b',
    'a/./b' or 'a/'), without '..', NUL or control characters, at most MAX_PATH bytes."""
    if not isinstance(value, str) or not value:
        raise StoreError(f"{where}: the path {shown(value)} is not a file name.", hint=TAMPERED)
    if UNSAFE_PATH.search(value) or len(value.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise StoreError(
            f"{where}: the path {shown(value)} is unsafe (absolute, not normalised, with "
            "'..', control characters, or too long).",
            hint=TAMPERED,
        )
    return value


def check_link(value: object, where: str) -> str:
    """``value`` when it can be a link's target: relative, non-empty, no NUL or control
    characters (where it leads is judged with the whole tree, in final_tree)."""
    if (
        not isinstance(value, str)
        or not value
        or value.startswith("/")
        or any(ord(c) < 32 for c in value)
        or len(value.encode("utf-8", "surrogatepass")) > MAX_PATH
    ):
        raise StoreError(
            f"{where}: the link target {shown(value)} is unsafe (absolute, empty or with "
            "control characters).",
            hint=TAMPERED,
        )
    return value


def final_tree(layers: Iterable[Iterable[Entry]]) -> list[Entry]:
    """The entries of a job's tree, later layers replacing earlier ones path by path, after
    checking the tree as a whole (StoreError naming the first entry that is unsafe)."""
    tree: dict[str, Entry] = {}
    for layer in layers:
        for entry in layer:
            tree[check_path(entry.path, "A manifest entry")] = _masked(entry)
    for path, entry in tree.items():
        _check_parents(tree, path)
        if entry.link is not None:
            _check_link_lands_inside(tree, path, entry.link)
        else:
            check_sha(entry.sha256, f"Entry '{path}'")
    return [tree[p] for p in sorted(tree)]


def escaping_links(entries: Iterable[Entry]) -> set[str]:
    """The paths of links among ``entries`` that lead out of the tree they form (absolute
    ones included): what a scan leaves out, as no reader would accept them."""
    tree = {e.path: e for e in entries}
    escaping = set()
    for path, entry in tree.items():
        if entry.link is not None:
            try:
                _check_link_lands_inside(tree, path, entry.link)
            except StoreError:
                escaping.add(path)
    return escaping


def _masked(entry: Entry) -> Entry:
    return (
        entry
        if entry.mode == entry.mode & PERMISSIONS
        else replace(entry, mode=entry.mode & PERMISSIONS)
    )


def _check_parents(tree: dict[str, Entry], path: str) -> None:
    """No entry may be written through a link or inside a file of the same tree."""
    at = path.find("/")
    while at != -1:
        parent = tree.get(path[:at])
        if parent is not None:
            kind = "a link" if parent.link is not None else "a file"
            raise StoreError(
                f"Entry '{path}' would be written inside '{path[:at]}', which is {kind} "
                "in the same job's files.",
                hint="two inputs of the job disagree about this path, or a manifest was "
                "tampered with; nothing was written",
            )
        at = path.find("/", at + 1)


def _check_link_lands_inside(tree: dict[str, Entry], path: str, target: str) -> None:
    """Resolve the link as the kernel would, component by component, following links of the
    tree (chains across manifests included); it must never climb above the tree's root."""
    check_link(target, f"Link '{path}'")
    resolved: list[str] = path.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise StoreError(
                    f"Link '{path}' -> '{target}' leads outside the job's files.",
                    hint="links are restored only when they stay inside the tree; nothing "
                    "was written",
                )
            resolved.pop()
            continue
        resolved.append(part)
        entry = tree.get("/".join(resolved))
        if entry is not None and entry.link is not None:
            hops += 1
            if hops > MAX_LINK_HOPS or entry.link.startswith("/"):
                raise StoreError(
                    f"Link '{path}' -> '{target}' goes through a loop of links or an absolute one.",
                    hint="links are restored only when they stay inside the tree; nothing "
                    "was written",
                )
            resolved.pop()
            pending = entry.link.split("/") + pending
