"""Assembling a job's tree on a host from its content-addressed blob cache."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

from dstack.ssh.remote import Remote
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Entry

q = shlex.quote

_MISSING_BLOBS = (
    'mkdir -p "$1"; while read -r h || [ -n "$h" ]; do [ -f "$1/$h" ] || echo "$h"; done'
)
_ASSEMBLE = r"""
cd "$1" || exit 1
blobs=$2
declare -A made
while IFS=$'\t' read -r kind value path; do
  dir=${path%/*}
  if [ "$dir" != "$path" ] && [ -z "${made[$dir]}" ]; then mkdir -p -- "$dir"; made[$dir]=1; fi
  if [ "$kind" = L ]; then ln -sfn -- "$value" "$path"
  else cp -f -- "$blobs/$kind" "$path" && chmod "$value" "$path"; fi
done
"""


def place_on_host(
    remote: Remote, blobs: BlobStore, cache_dir: str, target: str, entries: list[Entry]
) -> None:
    """Upload the blobs the host's cache lacks, then build ``target`` from the cache."""
    wanted = sorted({e.sha256 for e in entries if e.link is None})
    missing = remote.check(
        f"bash -c {q(_MISSING_BLOBS)} _ {q(cache_dir)}", "\n".join(wanted).encode()
    )
    chunks = {e.sha256: e.chunks for e in entries if e.chunks}
    for sha in missing.decode().split():
        _upload_blob(remote, blobs, sha, f"{cache_dir}/{sha}", chunks.get(sha))
    lines = [
        f"L\t{e.link}\t{e.path}" if e.link is not None else f"{e.sha256}\t{e.mode:o}\t{e.path}"
        for e in entries
    ]
    remote.check(
        f"mkdir -p {q(target)} && bash -c {q(_ASSEMBLE)} _ {q(target)} {q(cache_dir)}",
        "\n".join(lines).encode() + b"\n",
    )


def _upload_blob(
    remote: Remote, blobs: BlobStore, sha: str, remote_path: str, chunks: tuple[str, ...] | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / sha
        blobs.get(sha, local, sha, keep=True, chunks=chunks)
        remote.put(local, f"{remote_path}.part")
    remote.check(f"mv -f {q(remote_path + '.part')} {q(remote_path)}")
