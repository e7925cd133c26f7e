#!/usr/bin/env bash
# Tells in one round trip what a host has: CPUs, memory, free disk in $HOME, OS, python3,
# bash and GPUs (nvidia-smi), as key=value lines (one gpu= line per GPU).
# Usage: host-probe.sh
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "disk_kb=$(df -Pk "$HOME" | awk 'NR==2 {print $4}')"
# shellcheck source=/dev/null
echo "os=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -sr)"
echo "python=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
echo "bash=${BASH_VERSION}"
echo "home=$HOME"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits | sed 's/^/gpu=/'
fi
