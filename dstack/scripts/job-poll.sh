#!/usr/bin/env bash
# Tells how a job on a host is: "rc CODE" once it ended, "running", or "gone" (ended without
# an exit code). The job is the process PID that started at START (ticks since boot); an empty
# START matches no process.
# Usage: job-poll.sh JOB_DIR PID START
rc() { [ -f "$1/rc" ] && echo "rc $(cat "$1/rc")"; }
alive() {
  [ -n "$3" ] && [ "$(cut -d' ' -f22 "/proc/$2/stat" 2>/dev/null)" = "$3" ] &&
    ! grep -q '^State:.*Z' "/proc/$2/status" 2>/dev/null
}
# rc is read again after the process is seen gone: it may have ended between the two looks;
# a job gone without rc may have been killed before its wrapper deleted env.sh
rc "$@" || { alive "$@" && echo running; } || rc "$@" || { rm -f "$1/env.sh"; echo gone; }
