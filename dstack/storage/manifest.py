"""Manifests: which files (path, size, mode, sha256) make up an artifact set or a code snapshot."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from dstack.errors import StoreError
from dstack.storage.blobs import BlobStore, file_sha256


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    mode: int
    sha256: str = ""
    link: str | None = None


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
            "entries": [asdict(e) for e in sorted(self.entries, key=lambda e: e.path)],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        return cls([Entry(**e) for e in data["entries"]], data["state"], data["paths"])

    def digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


def safe_relative(path: str) -> PurePosixPath:
    """Refuse manifest paths that are absolute or climb out with '..'."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise StoreError(
            f"Manifest path '{path}' is unsafe (absolute or leaving its folder).",
            hint="the manifest was tampered with; it was not extracted",
        )
    return pure


class StatCache:
    """Remembers hashes by (size, mtime, inode) so unchanged files are not hashed again."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int, int], str]] = {}

    def sha256(self, path: Path, st: os.stat_result) -> str:
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._seen.get(str(path))
        if hit and hit[0] == key:
            return hit[1]
        sha = file_sha256(path)
        self._seen[str(path)] = (key, sha)
        return sha


def scan_files(
    root: Path,
    rel_paths: Iterable[str],
    blobs: BlobStore,
    cache: StatCache | None = None,
    link: bool = False,
) -> list[Entry]:
    """Store each regular file (and symlink) under the given paths; return their entries.

    Files are hashed on all cores. With ``link`` the store may hard-link a file instead of
    copying it: only for files nobody rewrites in place (rsync replaces, it never edits)."""
    cache = cache or StatCache()
    found: list[tuple[Path, str, os.stat_result]] = []
    for rel in rel_paths:
        for path in _walk(root / rel):
            try:
                found.append((path, path.relative_to(root).as_posix(), path.lstat()))
            except FileNotFoundError:
                continue  # removed while we looked: the next scan sees the truth

    def store(item: tuple[Path, str, os.stat_result]) -> Entry | None:
        path, name, st = item
        try:
            if stat.S_ISLNK(st.st_mode):
                return Entry(name, 0, 0o777, link=os.readlink(path))
            if stat.S_ISREG(st.st_mode):
                sha = blobs.put(path, cache.sha256(path, st), link=link)
                return Entry(name, st.st_size, stat.S_IMODE(st.st_mode), sha)
        except FileNotFoundError:
            pass
        return None

    if len(found) < 2:
        stored = [store(item) for item in found]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            stored = list(pool.map(store, found))
    return [entry for entry in stored if entry is not None]


def _walk(path: Path) -> Iterable[Path]:
    if path.is_symlink() or path.is_file():
        yield path
        return
    if not path.is_dir():
        return
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            yield Path(folder) / name


def materialize(
    entries: list[Entry],
    dest: Path,
    blobs: BlobStore,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write entries under ``dest``; links may not point outside it."""
    dest_resolved = dest.resolve()
    for entry in entries:
        rel = safe_relative(entry.path)
        target = dest / rel
        if entry.link is not None:
            resolved = (target.parent / entry.link).resolve()
            if not resolved.is_relative_to(dest_resolved):
                raise StoreError(
                    f"Symlink '{entry.path}' points outside its folder ({entry.link}).",
                    hint="links are restored only when they stay inside the artifacts",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(entry.link, target)
            continue
        blobs.get(entry.sha256, target, entry.path)
        os.chmod(target, entry.mode & 0o777 | 0o200)
        if progress:
            progress(entry.size)
