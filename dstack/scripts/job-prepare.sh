#!/usr/bin/env bash
# Makes a job's folder on a host and clears what an earlier start of it left (its agent's
# progress too: a new agent sends the new log from its start).
# Usage: job-prepare.sh JOB_DIR
mkdir -p -- "$1" && cd -- "$1" && rm -f -- pid rc log agent-state.json agent-status.json
