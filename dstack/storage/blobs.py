"""Content-addressed blobs: sha256 keys, fan-out folders, written once, verified on every read.

Over a remote store two things keep syncs cheap: hashes known to be in the store are remembered
in a file per store (blobs are never overwritten or deleted, so a known hash stays true), and a
large batch of unknown hashes is answered with one listing rather than a request per blob.
Blobs read from a remote store for a job are kept in a local cache, verified again on each use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dstack.errors import ContentMismatch, StoreError
from dstack.storage.objects import Meter, ObjectStore
from dstack.storage.tree import check_sha
from dstack.storage.upload import Span, open_span

CHUNK = 1 << 20  # read size
CHUNK_SIZE = 32 << 20  # files larger than this go to remote stores as chunks of this size
LIST_AT = 256  # unknown hashes in one batch from which a listing is cheaper than lookups
LIST_PAGES_PER_HASH = 4  # list at most this many keys per unknown hash before falling back


def file_sha256(path: str | Path, span: Span | None = None) -> str:
    """The sha256 of the file, or of the ``span`` of it (read into one reused buffer: many
    threads hashing at once would otherwise grow the allocator's arenas)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open_span(Path(path), span) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def chunk_tree(chunks: Iterable[str]) -> str:
    """The name of a file kept as chunks: the sha256 of its chunks' sha256 digests, in order
    (as Dropbox's content hash), computed without reading the file again."""
    return hashlib.sha256(b"".join(bytes.fromhex(c) for c in chunks)).hexdigest()


def blob_key(sha: str) -> str:
    """The key of a blob; the hash is checked first, as it may come from a store."""
    check_sha(sha, "A blob")
    return f"blobs/{sha[:2]}/{sha[2:]}"


@dataclass(frozen=True)
class Upload:
    """A file (or the ``span`` of it that is one chunk) to store under its hash;
    ``signature`` is the file's (size, mtime) when it was hashed."""

    path: str
    sha256: str
    signature: tuple[int, int]
    span: Span | None = None

    @property
    def size(self) -> int:
        return self.span[1] if self.span else self.signature[0]


class KnownBlobs:
    """Hashes known to be in one store, shared by every process through an append-only file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hashes: set[str] = set()
        self._lock = threading.Lock()
        if path is not None and path.exists():
            self.hashes = set(path.read_text().split())

    def __contains__(self, sha: str) -> bool:
        return sha in self.hashes

    def add(self, shas: Iterable[str]) -> None:
        with self._lock:
            new = [s for s in shas if s not in self.hashes]
            self.hashes.update(new)
            if new and self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as out:  # O_APPEND: concurrent writers never interleave
                    out.write("".join(f"{s}\n" for s in new))


class BlobStore:
    def __init__(
        self,
        objects: ObjectStore,
        known_path: Path | None = None,
        cache: ObjectStore | None = None,
    ) -> None:
        self.objects, self.cache = objects, cache
        self.known = KnownBlobs(known_path)
        self.chunk_size = CHUNK_SIZE

    def chunked(self, size: int) -> bool:
        """Whether a file of this size is stored as chunks: only in a remote store (a local
        one hard-links or copies whole files; nothing there to overlap with hashing)."""
        return self.objects.remote and size > self.chunk_size

    # writing ---------------------------------------------------------------------------

    def missing(self, shas: Iterable[str]) -> set[str]:
        """The hashes the store lacks."""
        unknown = {s for s in shas if s not in self.known}
        if not unknown:
            return set()
        present: set[str] = set()
        if self.objects.remote and len(unknown) >= LIST_AT:
            listed, upto = self._listed(len(unknown) * LIST_PAGES_PER_HASH)
            present = unknown & listed
            if upto is None:
                unknown_left: set[str] = set()
            else:
                unknown_left = {s for s in unknown - present if s > upto}
        else:
            unknown_left = unknown
        if unknown_left:
            keys = sorted(unknown_left)
            with ThreadPoolExecutor(self.objects.parallelism) as pool:
                found = pool.map(lambda s: self.objects.exists(blob_key(s)), keys)
                found_by = dict(zip(keys, found))  # noqa: B905 - no strict=: agents run Python 3.9
                present |= {s for s, there in found_by.items() if there}
        self.known.add(present)
        return unknown - present

    def _listed(self, limit: int) -> tuple[set[str], str | None]:
        """Hashes found by listing; the last hash seen when the listing was cut short."""
        keys = self.objects.keys("blobs/", limit=limit)
        shas = {k[6:8] + k[9:] for k in keys if len(k) == 6 + 2 + 1 + 62}
        return shas, (max(shas) if len(keys) >= limit and shas else None)

    def put_many(
        self, uploads: Iterable[Upload], link: bool = False, progress: Meter | None = None
    ) -> set[str]:
        """Store what the store lacks, in parallel; returns hashes whose file changed meanwhile
        (their blob is not kept: the next sync stores the new content)."""
        by_sha = {u.sha256: u for u in uploads}
        todo = [by_sha[s] for s in sorted(self.missing(by_sha))]
        if progress is not None:
            progress.expect(sum(item.size for item in todo))
        if len(todo) == 1:
            changed = {s for s in [self._send(todo[0], link, progress)] if s}
        elif todo:
            with ThreadPoolExecutor(self.objects.parallelism) as pool:
                changed = {s for s in pool.map(lambda u: self._send(u, link, progress), todo) if s}
        else:
            changed = set()
        self.known.add(s for s in by_sha if s not in changed)
        return changed

    def _send(self, item: Upload, link: bool, progress: Meter | None) -> str | None:
        """Store one file or chunk; its hash when the file was rewritten meanwhile. The store
        commits a blob only when the bytes it got hash to its name, and never replaces or
        deletes one already there: a file changing mid-upload costs nobody a good blob."""
        key = blob_key(item.sha256)
        try:
            if link and item.span is None:
                self.objects.link_file(key, Path(item.path), item.sha256, item.signature)
            else:
                self.objects.put_file(key, Path(item.path), progress, item.span, item.sha256)
        except ContentMismatch:
            return item.sha256
        return None

    def put_chunked(
        self, path: str, signature: tuple[int, int], progress: Meter | None = None
    ) -> tuple[str, tuple[str, ...]] | None:
        """Store a large file as chunks of ``chunk_size``: each chunk is hashed and, when the
        store lacks it, sent, all chunks at once on the store's threads; returns the file's
        name (chunk_tree of the chunks) and its chunks' hashes, or None when the file was
        rewritten meanwhile (the next sync stores the new content).

        Chunks hash on all cores while others upload (a whole-file sha256 would be one core's
        1 GB/s), and an interrupted upload resumes with the chunks the store still lacks."""
        size = signature[0]
        spans = [(at, min(self.chunk_size, size - at)) for at in range(0, size, self.chunk_size)]
        if progress is not None:
            progress.expect(size)

        def store(span: Span) -> tuple[str, bool]:
            sha = file_sha256(path, span)
            if not self.missing([sha]):
                if progress is not None:
                    progress(span[1])
                return sha, False
            return sha, self._send(Upload(path, sha, signature, span), False, progress) is not None

        with ThreadPoolExecutor(self.objects.parallelism) as pool:
            stored = list(pool.map(store, spans))
        if any(changed for _, changed in stored) or _signature(path) != signature:
            return None
        chunks = tuple(sha for sha, _ in stored)
        self.known.add(chunks)
        return chunk_tree(chunks), chunks

    def put(self, path: Path, sha: str | None = None, link: bool = False) -> str:
        """Store one file's bytes unless a blob with that hash exists; returns the hash."""
        signature = _signature(path)
        sha = sha or file_sha256(path)
        if self.put_many([Upload(str(path), sha, signature)], link):
            raise StoreError(f"'{path}' changed while it was being stored; try again.")
        return sha

    def has(self, sha: str) -> bool:
        return not self.missing([sha])

    # reading ---------------------------------------------------------------------------

    def get(
        self,
        sha: str,
        dest: Path,
        label: str,
        keep: bool = False,
        chunks: tuple[str, ...] | None = None,
        size: int | None = None,
    ) -> None:
        """Write the blob (or the file made of ``chunks``) to ``dest`` atomically, refusing
        bytes whose hash is not the one asked for, or whose length is not ``size``.

        With ``keep`` blobs read from a remote store are also kept in the local cache."""
        if chunks is not None and chunk_tree(chunks) != sha:
            raise StoreError(
                f"'{label}' has a chunk list that does not match its hash {sha[:12]}….",
                hint="the manifest was tampered with or damaged; nothing was written",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dstack-")
        try:
            with os.fdopen(fd, "wb") as out:
                for part in chunks or (sha,):
                    self._copy_blob(part, out, Path(tmp), label, keep)
                if size is not None and out.tell() != size:
                    raise StoreError(
                        f"'{label}' has {out.tell()} bytes in the store, but its manifest "
                        f"says {size}.",
                        hint="the manifest was tampered with or damaged; nothing was written",
                    )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _copy_blob(self, sha: str, out: BinaryIO, path: Path, label: str, keep: bool) -> None:
        """Append one verified blob to ``out`` (the file at ``path``), from the local cache
        when it is there."""
        start = out.tell()
        if self.cache is not None and self.cache.exists(blob_key(sha)):
            try:
                return self._copy_verified(self.cache, sha, out, label)
            except StoreError:  # damaged on this disk (and moved aside): fetch it again
                out.seek(start)
                out.truncate()
        self._copy_verified(self.objects, sha, out, label)
        if keep and self.cache is not None:
            out.flush()
            self.cache.put_file(blob_key(sha), path, span=(start, out.tell() - start))

    def _copy_verified(self, source: ObjectStore, sha: str, out: BinaryIO, label: str) -> None:
        digest = hashlib.sha256()
        for piece in source.open_read(blob_key(sha)):
            digest.update(piece)
            out.write(piece)
        if digest.hexdigest() != sha:
            aside = source.quarantine(blob_key(sha))
            if aside and source is self.objects:
                self.known.hashes.discard(sha)  # so that storing it again does store it
            raise StoreError(
                f"'{label}' is corrupted in the store {source.url}: its content "
                f"hashes to {digest.hexdigest()[:12]}…, not {sha[:12]}…"
                + (f"; the damaged copy was moved to {aside}." if aside else "."),
                hint="re-run the job that produced it: that stores it again"
                if aside
                else f"dstack never deletes a blob others may read: remove {blob_key(sha)} "
                f"from {source.url} (its owner or an admin), then re-run the job that produced it",
            )


def _signature(path: str | Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)
