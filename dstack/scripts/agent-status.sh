#!/usr/bin/env bash
# Prints what a job's agent last said of itself (its agent-status.json, or {}), then on a
# line of its own "alive" while an agent holds the job's lock, else "gone". The lock is looked
# at first: an agent writes its last status before it lets go of the lock, so "gone" always
# comes with that last status (never one it overwrote just after).
# Usage: agent-status.sh JOB_DIR
cd "$1" || exit 1
if flock -n agent.lock true 2>/dev/null; then alive=gone; else alive=alive; fi
cat agent-status.json 2>/dev/null || echo '{}'
echo
echo "$alive"
