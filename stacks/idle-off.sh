#!/bin/bash
# dstack-idle-off IDLE EVERY [--after-seal SEALED] PATTERN...: powers the host off after IDLE
# seconds without a busy job (looking every EVERY seconds); with --after-seal, already after
# SEALED seconds once every job's agent has sealed its data and nobody is logged in over SSH.
#
# PATTERN matches the `pid` files of job folders. A job is busy while its process lives and it
# has no `rc` yet, and after that while its agent still holds agent.lock and has not said
# "sealed" or "seal-failed" in agent-status.json: its log and artifacts are on their way to the
# store (the agent bounds its own tries). A lock file that no process holds (a dead agent)
# does not count, so nothing here waits for ever.
#
# "Nobody is logged in": no process whose command line matches DSTACK_IDLE_SESSIONS (a pgrep
# pattern; by default sshd's per-connection processes "sshd: USER [priv]" / "sshd: USER@tty",
# "sshd-session: ..." since OpenSSH 9.8). An attached dstack holds such a connection, so only
# a job whose laptop went away ends early; when pgrep cannot tell, someone counts as there.
idle_limit=$1 every=$2
shift 2
after_seal=
if [ "${1:-}" = --after-seal ]; then
  after_seal=$2
  shift 2
fi
sessions=${DSTACK_IDLE_SESSIONS:-'^sshd(-session)?: [^ /[]+( \[priv\]|@)'}

# Whether process $1 lives and is not a zombie (a killed job can linger as one).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ -n "$stat" ] && [ "${stat%% *}" != Z ]
}

# running | uploading | sealed | ended: what the job of pid file $1 is doing.
job_state() {
  local dir=${1%/pid} pid
  pid=$(cat "$1" 2>/dev/null)
  if [ ! -f "$dir/rc" ] && [ -n "$pid" ] && alive "$pid"; then
    echo running
  elif grep -Eqs '"state": *"sealed"' "$dir/agent-status.json"; then
    echo sealed
  elif grep -Eqs '"state": *"seal-failed"' "$dir/agent-status.json"; then
    echo ended
  elif [ -f "$dir/agent.lock" ] && { flock -n "$dir/agent.lock" true 2>/dev/null; [ $? -eq 1 ]; }; then
    echo uploading # flock -n says 1 only when another process holds the lock
  else
    echo ended
  fi
}

nobody_logged_in() {
  pgrep -f "$sessions" >/dev/null 2>&1
  [ $? -eq 1 ] # 0: someone is; 2 or more (or no pgrep): cannot tell
}

idle=0 quiet=0
while sleep "$every"; do
  busy='' sealed='' unsealed=''
  for pattern in "$@"; do
    for pid in $pattern; do
      [ -f "$pid" ] || continue
      case $(job_state "$pid") in
        running | uploading) busy=1 ;;
        sealed) sealed=1 ;;
        *) unsealed=1 ;;
      esac
    done
  done
  if [ -n "$busy" ]; then
    idle=0 quiet=0
    continue
  fi
  idle=$((idle + every))
  if [ -n "$after_seal" ] && [ -n "$sealed" ] && [ -z "$unsealed" ] && nobody_logged_in; then
    quiet=$((quiet + every))
  else
    quiet=0
  fi
  if [ "$idle" -ge "$idle_limit" ]; then
    echo "$(date -u +%FT%TZ) no dstack job for ${idle} s: powering off"
    exec shutdown -h now
  fi
  if [ -n "$after_seal" ] && [ "$quiet" -ge "$after_seal" ]; then
    echo "$(date -u +%FT%TZ) every job sealed and nobody logged in for ${quiet} s: powering off"
    exec shutdown -h now
  fi
done
