#!/usr/bin/env bash
# Makes a job's folder on a host and clears what an earlier start of it left.
# Usage: job-prepare.sh JOB_DIR
mkdir -p -- "$1" && rm -f -- "$1/pid" "$1/rc" "$1/log"
