#!/usr/bin/env bash
# Sends SIGNAL to a job's whole process group, and removes its env.sh (its secrets), which is
# there only when the job was stopped before its wrapper read it.
# Usage: job-signal.sh SIGNAL PGID JOB_DIR
kill -s "$1" -- "-$2" 2>/dev/null
rm -f -- "$3/env.sh"
