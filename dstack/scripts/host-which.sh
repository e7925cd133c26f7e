#!/usr/bin/env bash
# Exits 0 when COMMAND is on the host's PATH (or a shell builtin).
# Usage: host-which.sh COMMAND
command -v "$1"
