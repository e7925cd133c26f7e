#!/usr/bin/env bash
# Removes a job's folder once its artifacts and log are safe, and its run's folder once empty.
# Usage: job-cleanup.sh JOB_DIR
rm -rf -- "$1"
rmdir -- "${1%/*}" 2>/dev/null
