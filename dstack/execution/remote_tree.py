"""Assembling a job's tree on a host from its content-addressed blob cache."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from dstack.errors import StoreError
from dstack.ssh.remote import Remote
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Entry


def place_on_host(
    remote: Remote, blobs: BlobStore, cache_dir: str, target: str, entries: list[Entry]
) -> None:
    """Upload the blobs the host's cache lacks, then build ``target`` from the cache."""
    chunks = {e.sha256: e.chunks for e in entries if e.chunks}
    wanted = sorted({e.sha256 for e in entries if e.link is None})
    asked = "\n".join(f"{sha} tree" if sha in chunks else sha for sha in wanted).encode()
    missing = _run_checked(remote, asked, "tree-missing-blobs.sh", cache_dir)
    uploads = [
        _upload_blob(remote, blobs, cache_dir, sha, chunks.get(sha))
        for sha in sorted(set(missing.decode().split()) & set(wanted))  # the host's answer
    ]  # is untrusted; all published by one command (a code tree has thousands of blobs)
    if uploads:
        hint = "the copy was damaged on its way or on the host's disk; run again"
        published = "\n".join(uploads).encode()
        _run_checked(remote, published, "tree-publish-blobs.sh", cache_dir, hint=hint)
    lines = [
        f"L\t{e.link}\t{e.path}" if e.link is not None else f"{e.sha256}\t{e.mode:o}\t{e.path}"
        for e in entries
    ]
    entries_text = "\n".join(lines).encode() + b"\n"
    _run_checked(remote, entries_text, "tree-assemble.sh", target, cache_dir)


def _run_checked(
    remote: Remote,
    data: bytes,
    script: str,
    *args: str,
    hint: str = "a manifest in the store was tampered with or damaged; nothing was run",
) -> bytes:
    """Run a tree-*.sh script, which refuses what the laptop refuses too (dstack.storage.tree):
    a host never trusts that the laptop checked, nor its own cache. What it refused (exit
    status 3 and a line on stderr) becomes a StoreError naming it."""
    code, out, err = remote.run_script(script, *args, data=data)
    if code == 3:
        raise StoreError(
            f"{remote.address.label} refused the job's files: {err.decode(errors='replace').strip()}.",
            hint=hint,
        )
    if code != 0:
        raise remote.failure("preparing the job's files", code, err)
    return out


def _upload_blob(
    remote: Remote, blobs: BlobStore, cache_dir: str, sha: str, chunks: tuple[str, ...] | None
) -> str:
    """Upload the blob under a name of its own (other laptops may upload the same blob to
    the same cache at once); the line that asks tree-publish-blobs.sh to check its digest
    and put it in place."""
    temp = f".tmp-{sha}.{os.getpid()}-{secrets.token_hex(6)}"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / sha
        blobs.get(sha, local, sha, keep=True, chunks=chunks)
        remote.put(local, f"{cache_dir}/{temp}")
    return f"{sha} {temp} {'tree' if chunks else 'plain'}"
