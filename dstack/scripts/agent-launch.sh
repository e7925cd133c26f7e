#!/usr/bin/env bash
# Starts a job's agent detached: its own session, none of this command's streams (as
# job-launch.sh), then waits (up to 5 s) until it holds the job's lock, so that whoever looks
# next sees it running. Starting it again is safe: a second agent of the job exits at once.
# With --check it runs in the foreground instead, to see that the host can write to the store.
# Usage: agent-launch.sh BUNDLE JOB_DIR [--check]
cd "$2" || exit 1
if [ "${3:-}" = --check ]; then
  exec python3 "$1" "$2" --check
fi
setsid nohup python3 "$1" "$2" >> agent.out 2>&1 < /dev/null &
for _ in $(seq 250); do
  flock -n agent.lock true 2>/dev/null || exit 0
  sleep 0.02
done
