#!/usr/bin/env bash
# library: blob-lib.sh
# Puts a blob uploaded to TEMP (a name no other writer uses) in its place SHA256 in the cache
# CACHE, once its content hashes to its name (KIND: plain or tree, as for blob_digest), by a
# link that fails when the name is taken: of writers of one blob at once the first wins, and a
# good blob is never replaced while a job may be copying it. Only a damaged one is replaced, in
# one rename. A damaged upload is removed and refused: exit 3 and a line on stderr.
# Usage: tree-publish-blob.sh CACHE SHA256 TEMP KIND
cd "$1" || exit 1
sha=$2 temp=$3 kind=$4
if ! [[ $sha =~ ^[0-9a-f]{64}$ && $temp =~ ^\.tmp-[0-9a-f]{64}\.[0-9a-z-]+$ ]]; then
  printf 'refused blob name %q or upload %q\n' "$sha" "$temp" >&2
  exit 3
fi
if ! blob_ok "$temp" "$sha" "$kind"; then
  rm -f -- "$temp"
  printf 'refused blob %s: the uploaded copy does not hash to its name\n' "$sha" >&2
  exit 3
fi
if ! ln -- "$temp" "$sha" 2>/dev/null && ! blob_ok "$sha" "$sha" "$kind"; then
  mv -f -- "$temp" "$sha"
fi
rm -f -- "$temp"
