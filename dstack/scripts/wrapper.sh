#!/usr/bin/env bash
# The job wrapper, the same on this machine and on hosts.
# Usage: wrapper.sh JOB_DIR WORKDIR MASK
#
# Runs JOB_DIR/job.sh in WORKDIR, in its own session; each output line gets the time it was
# written, and the exit code lands in JOB_DIR/rc atomically. On TERM the job decides how to end
# (its own traps) while the wrapper and the log loop stay to record its last lines and exit
# code; KILL ends everything. Secrets arrive in env.sh (0600), which is deleted once read and
# before the pid is written: once a job has started, no file on the host holds them, and
# adopting it needs none. Each piece in DSTACK_MASK_PIECES (an array: never exported to the
# job) becomes MASK before a line is stored. The wrapper keeps its values in "$1".."$3", which
# env.sh cannot change, and its own variables are DSTACK_*, which no secret may be named.
# Only bash is needed on the host ($EPOCHREALTIME: bash >= 5, `date` otherwise).
trap true TERM INT
cd "$1" || exit 1
set -a
# shellcheck source=/dev/null
. ./env.sh
set +a
rm -f ./env.sh
echo $$ > pid
mkdir -p "$2" && cd "$2" || exit 1
bash "$1/job.sh" < /dev/null 2>&1 | {
  trap '' TERM INT
  while IFS= read -r DSTACK_LINE || [ -n "$DSTACK_LINE" ]; do
    for DSTACK_PIECE in "${DSTACK_MASK_PIECES[@]}"; do
      DSTACK_LINE=${DSTACK_LINE//"$DSTACK_PIECE"/"$3"}
    done
    printf '%s %s\n' "${EPOCHREALTIME:-$(date +%s.%N)}" "$DSTACK_LINE"
  done >> "$1/log"
}
DSTACK_RC=${PIPESTATUS[0]}
echo "$DSTACK_RC" > "$1/rc.tmp" && mv "$1/rc.tmp" "$1/rc"
exit "$DSTACK_RC"
