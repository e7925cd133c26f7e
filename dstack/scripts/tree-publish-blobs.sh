#!/usr/bin/env bash
# library: blob-lib.sh
# Puts blobs uploaded to temporary names (names no other writer uses) in their places in the
# cache CACHE, each once its content hashes to its name. Reads one blob a line from stdin,
# space-separated: "SHA256 TEMP KIND" (KIND: plain or tree, as for blob_digest). A blob is put
# in place by a link that fails when the name is taken: of writers of one blob at once the
# first wins, and a good blob is never replaced while a job may be copying it; only a damaged
# one is replaced, in one rename. A damaged upload is removed and refused: exit 3 and a line
# on stderr, after the others are in place.
# Usage: tree-publish-blobs.sh CACHE < UPLOADS
cd "$1" || exit 1
refused=0
while read -r sha temp kind || [ -n "$sha" ]; do
  if ! [[ $sha =~ ^[0-9a-f]{64}$ && $temp =~ ^\.tmp-[0-9a-f]{64}\.[0-9a-z-]+$ ]]; then
    printf 'refused blob name %q or upload %q\n' "$sha" "$temp" >&2
    exit 3
  fi
  if ! blob_ok "$temp" "$sha" "$kind"; then
    rm -f -- "$temp"
    printf 'refused blob %s: the uploaded copy does not hash to its name\n' "$sha" >&2
    refused=3
    continue
  fi
  if ! ln -- "$temp" "$sha" 2>/dev/null && ! blob_ok "$sha" "$sha" "$kind"; then
    mv -f -- "$temp" "$sha"
  fi
  rm -f -- "$temp"
done
exit "$refused"
