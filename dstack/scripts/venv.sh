#!/usr/bin/env bash
# Builds (once) the cached Python environment a job runs in, and prints its python's path.
# Usage: venv.sh CACHE PYTHON REQUIREMENTS [PACKAGE...]   (REQUIREMENTS may be empty)
#
# The environment is CACHE/$DSTACK_VENV_ID (a hash of the requirements, the python and the
# packages). Jobs that need the same one at once wait for each other on its lock (flock: hosts
# are Linux); a build that failed half-way is redone, since only a finished one is marked ready.
# What it says goes to stderr, into the job's log; stdout carries only the path.
set -e
cache=$1 python=$2 requirements=$3
shift 3
venv=$cache/${DSTACK_VENV_ID:?the job has no DSTACK_VENV_ID}
sources=() what=()
if [ -n "$requirements" ]; then
  sources+=(-r "$requirements")
  what+=("$requirements")
fi
if [ $# -gt 0 ]; then
  sources+=("$@")
  what+=("$*")
fi
exec 3>&1 1>&2
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.dstack-ready" ]; then
  echo "dstack: building the Python environment from ${what[0]}${what[1]:+ and ${what[1]}}"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "${sources[@]}"
  touch "$venv/.dstack-ready"
fi
echo "$venv/bin/python" >&3
