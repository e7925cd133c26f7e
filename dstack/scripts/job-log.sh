#!/usr/bin/env bash
# Prints a job's log from byte OFFSET on (nothing when there is no log yet).
# Usage: job-log.sh JOB_DIR OFFSET
tail -c "+$(($2 + 1))" "$1/log" 2>/dev/null
