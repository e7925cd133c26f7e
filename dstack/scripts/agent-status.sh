#!/usr/bin/env bash
# Prints what a job's agent last said of itself (its agent-status.json, or {}), then on a
# line of its own "alive" while an agent holds the job's lock, else "gone".
# Usage: agent-status.sh JOB_DIR
cd "$1" || exit 1
cat agent-status.json 2>/dev/null || echo '{}'
echo
if flock -n agent.lock true 2>/dev/null; then echo gone; else echo alive; fi
