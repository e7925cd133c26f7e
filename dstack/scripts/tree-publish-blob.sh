#!/usr/bin/env bash
# Puts an uploaded blob (BLOB.part) in its place in the cache, in one step.
# Usage: tree-publish-blob.sh BLOB
mv -f -- "$1.part" "$1"
