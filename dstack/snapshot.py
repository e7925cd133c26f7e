"""The code snapshot of a run: git-tracked plus untracked, non-ignored files, stored as a manifest."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dstack.storage.manifest import Manifest, StatCache, scan_files
from dstack.storage.store import Store, snapshot_key


@dataclass(frozen=True)
class Snapshot:
    digest: str
    files: int
    size: int
    commit: str | None
    branch: str | None
    dirty_hash: str | None

    @property
    def key(self) -> str:
        return snapshot_key(self.digest)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(**data)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def repo_files(root: Path) -> tuple[list[str], bool]:
    """Files to snapshot and whether ``root`` is inside a git work tree."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        return sorted({n for n in names if os.path.lexists(root / n)}), True
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel = Path(folder).relative_to(root)
        files += [(rel / n).as_posix() for n in names]
    return sorted(files), False


def _git_identity(root: Path) -> tuple[str | None, str | None, str | None]:
    """(commit, branch, hash of uncommitted changes or None when clean)."""
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.decode().strip() or None
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.decode().strip() or None
    status = _git(root, "status", "--porcelain", "-z", "--untracked-files=all").stdout
    if not status:
        return commit, branch, None
    digest = hashlib.sha256(status)
    digest.update(_git(root, "diff", "HEAD", "--binary").stdout if commit else b"")
    return commit, branch, digest.hexdigest()


def capture(root: Path, store: Store, cache: StatCache | None = None) -> Snapshot:
    """Store the repository's files and return the snapshot that names them."""
    names, is_git = repo_files(root)
    entries = scan_files(root, names, store.blobs, cache)
    manifest = Manifest(entries, "complete", ["."])
    digest = manifest.digest()
    key = snapshot_key(digest)
    if not store.objects.exists(key):
        store.put_manifest(key, manifest)
    commit, branch, dirty = _git_identity(root) if is_git else (None, None, None)
    return Snapshot(digest, len(entries), manifest.total_size, commit, branch, dirty)
