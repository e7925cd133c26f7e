#!/usr/bin/env bash
# Creates each PATH (with its parents) under FOLDER.
# Usage: tree-mkdirs.sh FOLDER PATH...
folder=$1
shift
dirs=()
for p in "$@"; do
  dirs+=("$folder/$p")
done
mkdir -p -- "${dirs[@]}"
