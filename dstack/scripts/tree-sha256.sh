#!/usr/bin/env bash
# Prints sha256sum's lines for the NUL-ended paths (relative to FOLDER) read from stdin.
# Usage: tree-sha256.sh FOLDER < PATHS
cd "$1" && xargs -0 sha256sum --
