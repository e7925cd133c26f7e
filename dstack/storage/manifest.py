"""Manifests: which files (path, size, mode, sha256) make up an artifact set or a code snapshot."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dstack.atomic import write_text_atomic
from dstack.errors import StoreError
from dstack.spec.names import shown
from dstack.storage.blobs import BlobStore, Upload, chunk_tree, file_sha256
from dstack.storage.objects import Meter
from dstack.storage.tree import (
    PERMISSIONS,
    TAMPERED,
    UNSAFE_PATH,
    check_link,
    check_path,
    check_sha,
    escaping_links,
    final_tree,
)
from dstack.storage.upload import Progress


@dataclass(frozen=True)
class Entry:
    """A file (its sha256) or a symlink (``link``). In a remote store a large file is kept as
    ``chunks``, the sha256 of each consecutive part, and named by their chunk_tree."""

    path: str
    size: int
    mode: int
    sha256: str = ""
    link: str | None = None
    chunks: tuple[str, ...] | None = None


@dataclass
class Manifest:
    """``state``: live (job still saving), complete (job done), partial (job failed or stopped)."""

    entries: list[Entry] = field(default_factory=list)
    state: str = "complete"
    paths: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> bytes:
        data = {
            "version": 1,
            "state": self.state,
            "paths": self.paths,
            "entries": [_entry_json(e) for e in sorted(self.entries, key=lambda e: e.path)],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str = "The manifest") -> Manifest:
        """Parse a manifest read from a store, checking every value before it is used
        (StoreError naming ``where`` and the entry otherwise)."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise StoreError(f"{where} is not valid JSON: {e}.", hint=TAMPERED) from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise StoreError(f"{where} has no list of entries.", hint=TAMPERED)
        state, paths = data.get("state"), data.get("paths", [])
        if state not in STATES:
            raise StoreError(f"{where} has an unknown state {shown(state)}.", hint=TAMPERED)
        if not isinstance(paths, list):
            raise StoreError(f"{where} has a malformed list of paths.", hint=TAMPERED)
        entries = [_entry(item, where) for item in data["entries"]]
        if len({e.path for e in entries}) != len(entries):
            raise StoreError(f"{where} lists a path twice.", hint=TAMPERED)
        return cls(entries, state, [_artifact_path(p, where) for p in paths])

    def digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


def _entry_json(e: Entry) -> dict[str, object]:
    data = {"path": e.path, "size": e.size, "mode": e.mode, "sha256": e.sha256, "link": e.link}
    if e.chunks is not None:  # absent otherwise: older readers and digests stay as they were
        data["chunks"] = list(e.chunks)
    return data


STATES = ("live", "complete", "partial")
MAX_SIZE = 1 << 50  # one pebibyte: larger sizes are damage, not data


def _entry(item: object, where: str) -> Entry:
    """One manifest entry from untrusted JSON: types, path, digests, links and sizes checked,
    the mode masked to permission bits."""
    if not isinstance(item, dict):
        raise StoreError(f"{where} has an entry that is not an object.", hint=TAMPERED)
    path = check_path(item.get("path"), f"{where}, an entry")
    at = f"{where}, entry '{path}'"
    size, mode, link, chunks = (item.get(k) for k in ("size", "mode", "link", "chunks"))
    for name, value in (("size", size), ("mode", mode)):
        if type(value) is not int or not 0 <= value <= MAX_SIZE:
            raise StoreError(f"{at}: {name} {shown(value)} is not a valid number.", hint=TAMPERED)
    assert isinstance(size, int) and isinstance(mode, int)
    if link is not None:
        return Entry(path, 0, 0o777, link=check_link(link, at))
    sha = check_sha(item.get("sha256"), at)
    if chunks is None:
        return Entry(path, size, mode & PERMISSIONS, sha)
    if not isinstance(chunks, list) or not chunks:
        raise StoreError(f"{at}: its chunk list is malformed.", hint=TAMPERED)
    parts = tuple(check_sha(c, f"{at}, a chunk") for c in chunks)
    if chunk_tree(parts) != sha:
        raise StoreError(f"{at}: its chunk list does not match its hash.", hint=TAMPERED)
    return Entry(path, size, mode & PERMISSIONS, sha, chunks=parts)


def _artifact_path(value: object, where: str) -> str:
    """A declared artifact path: '.' (the whole folder) or a safe relative path."""
    return "." if value == "." else check_path(value, f"{where}, its artifact paths")


def safe_relative(path: str) -> PurePosixPath:
    """A path found on a host, when it stays inside its folder (StoreError otherwise)."""
    return PurePosixPath(check_path(path, "A file on the host"))


log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000


class StatCache:
    """Remembers hashes by (size, mtime, inode) so unchanged files are not hashed again.

    ``load``/``save`` keep it in a file between commands (re-syncing an unchanged tree then
    reads no file); a stale or damaged file only costs hashing again."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._seen: dict[str, tuple[tuple[int, int, int], str, tuple[str, ...] | None]] = {}
        self._dirty = False

    @classmethod
    def load(cls, path: Path) -> StatCache:
        cache = cls(path)
        try:
            raw = json.loads(path.read_text())
            cache._seen = {
                k: ((v[0], v[1], v[2]), v[3], tuple(v[4]) if len(v) > 4 else None)
                for k, v in raw.items()
            }
        except (FileNotFoundError, ValueError, TypeError, IndexError, AttributeError):
            pass
        return cache

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        data = {
            k: [*key, sha, *([list(chunks)] if chunks else [])]
            for k, (key, sha, chunks) in self._seen.items()
        }
        write_text_atomic(self.path, json.dumps(data))

    def lookup(self, path: str, st: os.stat_result) -> tuple[str, tuple[str, ...] | None] | None:
        """The file's hash (and its chunks' hashes when it was stored in chunks) when it is
        unchanged since it was last hashed."""
        hit = self._seen.get(path)
        if hit and hit[0] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return hit[1], hit[2]
        return None

    def sha256(self, path: str, st: os.stat_result) -> str:
        """The file's content sha256 (a hit that names the file by its chunks does not do)."""
        hit = self.lookup(path, st)
        if hit is not None and hit[1] is None:
            return hit[0]
        sha = file_sha256(path)
        self.remember(path, st, sha)
        return sha

    def remember(
        self, path: str, st: os.stat_result, sha: str, chunks: tuple[str, ...] | None = None
    ) -> None:
        # A file modified moments ago may change again within the file system's timestamp
        # granularity, keeping size and mtime: remember only hashes of settled files.
        if time.time_ns() - st.st_mtime_ns > RACY_NS:
            self._seen[path] = ((st.st_size, st.st_mtime_ns, st.st_ino), sha, chunks)
            self._dirty = True


def scan_files(
    root: Path,
    rel_paths: Iterable[str],
    blobs: BlobStore,
    cache: StatCache | None = None,
    link: bool = False,
    progress: Meter | None = None,
) -> list[Entry]:
    """Store each regular file (and symlink) under the given paths; return their entries.

    Files the stat cache does not know are hashed on all cores, then only the blobs the store
    lacks are sent, in parallel. Large files going to a remote store are stored as chunks,
    each sent while the next is hashed (BlobStore.put_chunked). With ``link`` the store
    may hard-link a file instead of copying it: only for files nobody rewrites in place (rsync
    replaces, it never edits). A file rewritten while it was being stored is left out; the
    next scan stores its new content. Paths are plain strings here: a scan of 10,000 unchanged
    files is mostly lstat calls."""
    cache = cache or StatCache()
    base = os.path.normpath(root)
    entries: list[Entry] = []
    stats: dict[str, os.stat_result] = {}
    to_hash: list[tuple[str, str, os.stat_result]] = []
    for rel in rel_paths:
        for path in _walk(os.path.normpath(os.path.join(base, rel))):
            name = path[len(base) + 1 :] if path != base else os.path.basename(path)
            if UNSAFE_PATH.search(name):
                raise StoreError(
                    f"Cannot store {shown(name)}: file names with control characters "
                    "(newlines, tabs) are not supported.",
                    hint="rename the file, or leave it out (.gitignore, or the artifact paths)",
                )
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    entries.append(Entry(name, 0, 0o777, link=os.readlink(path)))
                elif stat.S_ISREG(st.st_mode):
                    stats[name] = st
                    hit = cache.lookup(path, st)
                    # A hit counts only in the same form: chunked files are named by their
                    # chunks, whole ones by their content (a home may switch stores).
                    if hit is None or (hit[1] is not None) != blobs.chunked(st.st_size):
                        to_hash.append((path, name, st))
                    else:
                        mode = stat.S_IMODE(st.st_mode)
                        entries.append(Entry(name, st.st_size, mode, hit[0], chunks=hit[1]))
            except FileNotFoundError:
                continue  # removed while we looked: the next scan sees the truth
            except PermissionError:
                raise _unreadable(name) from None
    # Chunked files the cache knew, but whose chunks this store lacks, are stored again.
    lacking = blobs.missing({c for e in entries if e.chunks for c in e.chunks})
    if lacking:
        stale = {e.path for e in entries if e.chunks and not lacking.isdisjoint(e.chunks)}
        entries = [e for e in entries if e.path not in stale]
        to_hash += [(f"{base}/{name}", name, stats[name]) for name in sorted(stale)]

    def hashed(item: tuple[str, str, os.stat_result]) -> Entry | None:
        path, name, st = item
        mode = stat.S_IMODE(st.st_mode)
        try:
            if not blobs.chunked(st.st_size):
                return Entry(name, st.st_size, mode, cache.sha256(path, st))
            stored = blobs.put_chunked(path, (st.st_size, st.st_mtime_ns), progress)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise _unreadable(name) from None
        if stored is None:
            return None
        cache.remember(path, st, *stored)
        return Entry(name, st.st_size, mode, stored[0], chunks=stored[1])

    if len(to_hash) > 1:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            entries += [e for e in pool.map(hashed, to_hash) if e is not None]
    else:
        entries += [e for e in map(hashed, to_hash) if e is not None]
    known = blobs.known
    uploads = [  # hashes this home knows the store has need no question and no Upload
        Upload(
            f"{base}/{e.path}",
            e.sha256,
            (stats[e.path].st_size, stats[e.path].st_mtime_ns),
        )
        for e in entries
        if e.link is None and e.chunks is None and e.sha256 not in known
    ]
    changed = blobs.put_many(uploads, link, progress)
    escaping = escaping_links(entries)
    for entry in entries:
        if entry.path in escaping and (entry.path, entry.link) not in _warned:
            _warned.add((entry.path, entry.link))
            log.warning(
                "left out the link %s -> %s: it leads out of the saved files, and no reader "
                "would restore it",
                shown(entry.path),
                shown(entry.link),
            )
    return [
        e
        for e in entries
        if (e.link is None and e.sha256 not in changed)
        or (e.link is not None and e.path not in escaping)
    ]


_warned: set[tuple[str, str | None]] = set()  # links already reported by this process


def _unreadable(name: str) -> StoreError:
    return StoreError(
        f"Cannot read {shown(name)}: permission denied.",
        hint="make it readable (chmod), or leave it out (.gitignore, or the artifact paths)",
    )


def _walk(path: str) -> Iterable[str]:
    if os.path.islink(path) or os.path.isfile(path):
        yield path
        return
    if not os.path.isdir(path):
        return
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(f"{folder}/{d}")]
        for name in sorted(files) + links:
            yield f"{folder}/{name}"


def materialize(
    entries: list[Entry],
    dest: Path,
    blobs: BlobStore,
    progress: Progress | None = None,
    keep: bool = False,
) -> None:
    """Write entries under ``dest`` (files in parallel, then links).

    The tree is checked whole first (final_tree), so a tampered manifest writes nothing; and
    nothing is written through a link already on disk that leads out of ``dest``."""
    tree = final_tree([entries])
    dest_resolved = dest.resolve()

    def inside(entry: Entry) -> Path:
        target = dest / entry.path
        if not target.parent.resolve().is_relative_to(dest_resolved):
            raise StoreError(
                f"'{entry.path}' would be written through a link that leads out of {dest}.",
                hint="remove the link from that folder, or choose an empty folder",
            )
        return target

    def write(entry: Entry) -> None:
        target = inside(entry)
        if target.is_symlink():
            target.unlink()  # never write through a link left in the target folder
        blobs.get(entry.sha256, target, entry.path, keep, entry.chunks, entry.size)
        os.chmod(target, entry.mode & PERMISSIONS | 0o200)
        if progress:
            progress(entry.size)

    files = [e for e in tree if e.link is None]
    if len(files) > 1:
        with ThreadPoolExecutor(blobs.objects.parallelism) as pool:
            list(pool.map(write, files))
    else:
        for entry in files:
            write(entry)
    for entry in tree:
        if entry.link is None:
            continue
        target = inside(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        os.symlink(entry.link, target)
