#!/usr/bin/env bash
# Waits (up to 5 s) for a job's wrapper to write its pid, then prints the pid and the
# process's start time (clock ticks since boot, /proc/PID/stat field 22): the pair names the
# job even after its pid is reused. When no pid came, it prints nothing and removes env.sh:
# the secrets of a wrapper that never ran stay on no disk.
# Usage: job-started.sh JOB_DIR
cd "$1" || exit 1
for _ in $(seq 250); do
  [ -s pid ] && break
  sleep 0.02
done
if [ -s pid ]; then
  p=$(cat pid)
  echo "$p $(cut -d' ' -f22 "/proc/$p/stat" 2>/dev/null)"
else
  rm -f env.sh
fi
