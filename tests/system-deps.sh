#!/usr/bin/env bash
# What the tests need from the system, installed when missing, and a Python that can make the
# tests' virtual environment. Run by the README's test command and by .ci/run, so a fresh
# machine gets the same tools as CI. Installs with apt-get (Debian, Ubuntu): as root, or
# through sudo; otherwise it names the packages to install and exits non-zero.
set -euo pipefail

say() { echo "tests/system-deps.sh: $*" >&2; }

# git: code snapshots. util-linux: flock (the venv cache), setpriv (the unwritable-home test),
# setsid and unshare. Own servers: a real OpenSSH server and client, rsync, and iproute2 (the
# extra hosts live in network namespaces). nodejs+npm: Azurite, the Azure Blob emulator, which
# tests/buckets.py installs from npm. The S3 and GCS servers come from PyPI with the [dev] extra.
missing=()
command -v git >/dev/null || missing+=(git)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ command -v ssh && command -v ssh-keygen; } >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
command -v ip >/dev/null || missing+=(iproute2)
{ command -v flock && command -v setpriv && command -v unshare; } >/dev/null || missing+=(util-linux)
command -v npm >/dev/null || missing+=(nodejs npm)

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
makes_venv() { rm -rf "$probe/venv" && python3 -m venv "$probe/venv" >"$probe/log" 2>&1; }
new_enough() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' && return
  say "$(command -v python3) is Python $(python3 -c 'import platform; print(platform.python_version())'); dstack needs 3.11 or newer"
  say "install Python 3.11+ and put it first on PATH as python3"
  exit 1
}
venv_ok=
if ! command -v python3 >/dev/null; then
  missing+=(python3 python3-venv)
else
  new_enough
  makes_venv && venv_ok=1 || missing+=(python3-venv)  # Debian leaves ensurepip out of python3
fi

if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      say "the tests need these system packages, and this user cannot install them: ${missing[*]}"
      say "as root: apt-get update && apt-get install -y ${missing[*]}"
      exit 1
    fi
    as_root=(sudo)
  fi
  if ! command -v apt-get >/dev/null; then
    say "the tests need these (Debian) packages, and there is no apt-get: ${missing[*]}"
    say "install the same tools with this system's package manager, then run this again"
    exit 1
  fi
  say "installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

new_enough
if [ -z "$venv_ok" ] && ! makes_venv; then
  say "$(command -v python3) cannot create a virtual environment:"
  tail -n 5 "$probe/log" >&2
  say "on Debian/Ubuntu: apt-get install python3-venv (for a Python of your own, rebuild it with ensurepip)"
  exit 1
fi
