#!/usr/bin/env bash
# Starts a job's wrapper on a host, detached: its own session, no terminal (the job would die
# with the connection) and none of this command's streams (the channel would stay open until
# the job ends). A retry after a dropped connection never starts it twice: a pid is there.
# Usage: job-launch.sh JOB_DIR WORKDIR MASK
cd "$1" || exit 1
if [ ! -s pid ]; then
  setsid nohup bash wrapper.sh "$1" "$2" "$3" > /dev/null 2>&1 < /dev/null &
fi
