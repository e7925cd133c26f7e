#!/usr/bin/env bash
# Stages the dstack agent (a zipapp) on a host under its sha256 and says whether it can run
# there: "ready", "missing" (send it, then call again with the file sent), or "python: WHAT"
# when the host has no python3 >= 3.9. A file sent is checked by its hash before it is used.
# Usage: agent-stage.sh BUNDLE SHA [SENT]
bundle=$1 sha=$2 sent=${3:-}
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  echo "python: $(python3 --version 2>&1 || echo 'no python3 found')"
  exit 0
fi
hash_of() { sha256sum < "$1" | cut -d' ' -f1; }
if [ -n "$sent" ]; then
  if [ "$(hash_of "$sent")" = "$sha" ]; then mv -f -- "$sent" "$bundle"; else rm -f -- "$sent"; fi
fi
if [ -f "$bundle" ] && [ "$(hash_of "$bundle")" = "$sha" ]; then echo ready; else echo missing; fi
