"""Assembling a job's tree on a host from its content-addressed blob cache."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

from dstack.errors import StoreError
from dstack.ssh.remote import Remote
from dstack.storage.blobs import BlobStore
from dstack.storage.manifest import Entry

q = shlex.quote

# Both scripts refuse what the local side refuses too (dstack.storage.tree): a host never
# trusts that the laptop checked. Exit status 3 and a line on stderr say what was refused.
_MISSING_BLOBS = r"""
mkdir -p "$1" || exit 1
while read -r h || [ -n "$h" ]; do
  [[ $h =~ ^[0-9a-f]{64}$ ]] || { printf 'refused blob name %q\n' "$h" >&2; exit 3; }
  [ -f "$1/$h" ] || echo "$h"
done
"""
_ASSEMBLE = r"""
cd "$1" || exit 1
root=$(pwd -P) blobs=$2
refuse() {
  printf 'refused %s\n' "$1" >&2
  cd / && rm -rf -- "$root"  # the job never starts on a half-checked tree
  exit 3
}
inside() {  # the path, its links followed (chains too), stays inside the tree
  local real
  real=$(realpath -m -- "$1" 2>/dev/null) || return 1
  [ "$real" = "$root" ] || [ "${real#"$root"/}" != "$real" ]
}
declare -A made
links=()
while IFS=$'\t' read -r kind value path; do
  case "/$path/" in */../*|*/./*|*//*) refuse "the path $(printf %q "$path")" ;; esac
  dir=${path%/*}
  if [ "$dir" != "$path" ] && [ -z "${made[$dir]}" ]; then
    inside "$dir" || refuse "$(printf %q "$path"): its folder leads outside the job's files"
    mkdir -p -- "$dir" || exit 1
    made[$dir]=1
  fi
  if [ -L "$path" ] || [ -f "$path" ]; then rm -f -- "$path"
  elif [ -e "$path" ]; then refuse "$(printf %q "$path"): a folder is in its place"; fi
  if [ "$kind" = L ]; then
    case "$value" in /*|"") refuse "the link $(printf %q "$path") -> $(printf %q "$value")" ;; esac
    ln -s -- "$value" "$path" || exit 1
    links+=("$path")
  else
    [[ $kind =~ ^[0-9a-f]{64}$ && $value =~ ^[0-7]{1,3}$ ]] || refuse "the entry $(printf %q "$path")"
    cp -- "$blobs/$kind" "$path" && chmod -- "$value" "$path" || exit 1
  fi
done
for link in "${links[@]}"; do
  inside "$link" || refuse "the link $(printf %q "$link"): it leads outside the job's files"
done
"""


def place_on_host(
    remote: Remote, blobs: BlobStore, cache_dir: str, target: str, entries: list[Entry]
) -> None:
    """Upload the blobs the host's cache lacks, then build ``target`` from the cache."""
    wanted = sorted({e.sha256 for e in entries if e.link is None})
    missing = _run_checked(
        remote, f"bash -c {q(_MISSING_BLOBS)} _ {q(cache_dir)}", "\n".join(wanted).encode()
    )
    chunks = {e.sha256: e.chunks for e in entries if e.chunks}
    for sha in missing.decode().split():
        _upload_blob(remote, blobs, sha, f"{cache_dir}/{sha}", chunks.get(sha))
    lines = [
        f"L\t{e.link}\t{e.path}" if e.link is not None else f"{e.sha256}\t{e.mode:o}\t{e.path}"
        for e in entries
    ]
    _run_checked(
        remote,
        f"mkdir -p {q(target)} && bash -c {q(_ASSEMBLE)} _ {q(target)} {q(cache_dir)}",
        "\n".join(lines).encode() + b"\n",
    )


def _run_checked(remote: Remote, command: str, data: bytes) -> bytes:
    """Run a script above; what the host refused becomes a StoreError naming it."""
    code, out, err = remote.exec_full(command, data)
    if code == 3:
        raise StoreError(
            f"{remote.address.label} refused the job's files: {err.decode(errors='replace').strip()}.",
            hint="a manifest in the store was tampered with or damaged; nothing was run",
        )
    if code != 0:
        raise remote.failure("preparing the job's files", code, err)
    return out


def _upload_blob(
    remote: Remote, blobs: BlobStore, sha: str, remote_path: str, chunks: tuple[str, ...] | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / sha
        blobs.get(sha, local, sha, keep=True, chunks=chunks)
        remote.put(local, f"{remote_path}.part")
    remote.check(f"mv -f {q(remote_path + '.part')} {q(remote_path)}")
