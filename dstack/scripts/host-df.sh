#!/usr/bin/env bash
# Prints df's POSIX lines (sizes in KiB) for the file system that holds FOLDER.
# Usage: host-df.sh FOLDER
df -Pk -- "$1"
