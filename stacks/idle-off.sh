#!/bin/bash
# dstack-idle-off IDLE EVERY PATTERN...: power off after IDLE seconds without a running job.
idle_limit=$1 every=$2; shift 2
idle=0
while sleep "$every"; do
  busy=
  for pattern in "$@"; do
    for pid in $pattern; do
      [ -f "$pid" ] && [ ! -f "${pid%/pid}/rc" ] && kill -0 "$(cat "$pid")" 2>/dev/null && busy=1
    done
  done
  if [ -n "$busy" ]; then idle=0; else idle=$((idle + every)); fi
  if [ "$idle" -ge "$idle_limit" ]; then exec shutdown -h now; fi
done
