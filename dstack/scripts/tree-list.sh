#!/usr/bin/env bash
# Lists the files and links under each PATH (relative to FOLDER): six NUL-ended fields per
# file (kind, size, mtime, mode, link target, path), since a name may hold tabs, newlines,
# anything but NUL. A PATH that does not exist is skipped.
# Usage: tree-list.sh FOLDER PATH...
cd "$1" || exit 1
shift
for p in "$@"; do
  [ -e "$p" ] || [ -L "$p" ] || continue
  find "$p" \( -type f -o -type l \) -printf '%y\0%s\0%T@\0%m\0%l\0%p\0'
done
