#!/usr/bin/env bash
# library: blob-lib.sh
# Prints which of the blobs read from stdin the host's blob cache CACHE cannot give a job:
# missing, or with content that no longer hashes to its name (a damaged blob is never trusted:
# listed here, it is uploaded again and replaced). One blob a line: "SHA256", or "SHA256 tree"
# for a file named by its chunk-tree hash. Like the laptop (dstack.storage.tree), the host
# refuses what is not a digest: exit 3 and a line on stderr.
# Uploads that a writer left behind more than an hour ago (killed mid-way) are removed.
# Usage: tree-missing-blobs.sh CACHE < BLOBS
mkdir -p -- "$1" && cd "$1" || exit 1
find . -maxdepth 1 -name '.tmp-*' -mmin +60 -delete 2>/dev/null
plain=()
while read -r h kind || [ -n "$h" ]; do
  [[ $h =~ ^[0-9a-f]{64}$ ]] || { printf 'refused blob name %q\n' "$h" >&2; exit 3; }
  if [ ! -f "$h" ]; then
    echo "$h"
  elif [ "$kind" = tree ]; then
    blob_ok "$h" "$h" tree || echo "$h"
  else
    plain+=("$h")
  fi
done
# A blob sha256_named does not vouch for, whatever the reason, is listed.
declare -A good
while read -r h; do good[$h]=1; done < <(sha256_named "${plain[@]}")
for h in "${plain[@]}"; do
  [ -n "${good[$h]}" ] || echo "$h"
done
