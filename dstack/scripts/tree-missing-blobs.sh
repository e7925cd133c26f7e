#!/usr/bin/env bash
# Prints which of the sha256 digests read from stdin (one a line) the host's blob cache CACHE
# lacks. Like the laptop (dstack.storage.tree), the host refuses what is not a digest: exit 3
# and a line on stderr.
# Usage: tree-missing-blobs.sh CACHE < DIGESTS
mkdir -p "$1" || exit 1
while read -r h || [ -n "$h" ]; do
  [[ $h =~ ^[0-9a-f]{64}$ ]] || { printf 'refused blob name %q\n' "$h" >&2; exit 3; }
  [ -f "$1/$h" ] || echo "$h"
done
