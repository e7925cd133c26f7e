#!/usr/bin/env bash
# Functions the blob-cache scripts share (a script that says "# library: blob-lib.sh" gets
# them put before its own text by dstack.scripts.load).
#
# CHUNK is dstack.storage.blobs.CHUNK_SIZE: a file over it is kept in the store as chunks and
# named by its chunk-tree hash (dstack.storage.blobs.chunk_tree), the sha256 of its chunks'
# binary sha256 digests in order.
CHUNK=33554432

# Prints the hash FILE is named by when KIND is "plain" (its sha256) or "tree" (its chunk tree).
blob_digest() {
  local file=$1 kind=$2 size chunks i escaped
  if [ "$kind" != tree ]; then
    sha256sum -- "$file" | cut -c1-64
    return
  fi
  size=$(stat -c %s -- "$file") || return 1
  chunks=$(((size + CHUNK - 1) / CHUNK))
  for ((i = 0; i < chunks; i++)); do
    dd if="$file" bs="$CHUNK" skip="$i" count=1 iflag=fullblock status=none | sha256sum
  done | cut -c1-64 | sed 's/../\\x&/g' | while read -r escaped; do
    printf '%b' "$escaped"
  done | sha256sum | cut -c1-64
}

# Whether FILE's content has the hash NAME (KIND as for blob_digest).
blob_ok() {
  [ -f "$1" ] && [ "$(blob_digest "$1" "$3")" = "$2" ]
}

# Prints those of the NAMEs (files named by their sha256, in this folder) whose content has
# that hash, with one sha256sum for all (a code tree has thousands of small files).
sha256_named() {
  [ $# -eq 0 ] && return
  printf '%s\0' "$@" | xargs -0 sha256sum -- 2>/dev/null | while read -r sum name; do
    [ "$sum" = "$name" ] && echo "$name"
  done
}
