#!/usr/bin/env bash
# library: blob-lib.sh
# Checks the dstack cache ROOT on a host (~/.dstack, which several homes may share) and, with
# "repair", removes what is wrong there (never edits a file in place):
#   blobs/SHA256   must hash to its name: its sha256, or for a file over CHUNK its chunk-tree
#                  hash (blob_digest); a bad one is removed and the next job uploads it again
#   blobs/.tmp-*   an upload unchanged for STALE_SECONDS was left by a killed writer (so was a
#                  *.part of an older dstack)
#   venvs/ID/      an environment without .dstack-ready whose build lock venvs/ID.lock nobody
#                  holds was left half-built by a killed build; removed under that lock
# Prints one line per finding, tab-separated: KIND PATH REASON DONE (KIND corrupt, invalid or
# leftover; PATH relative to ROOT, quoted by %q since names here may hold anything; DONE
# "removed", "kept" when removing failed, or "-" without repair), then a last line
# "checked BLOBS ENVIRONMENTS".
# Usage: host-fsck.sh ROOT STALE_SECONDS [repair]
root=$1 stale=$2 repair=${3:-}
[[ $stale =~ ^[0-9]+$ ]] || { printf 'refused the age %q\n' "$stale" >&2; exit 3; }
shopt -s nullglob dotglob
now=$(date +%s)
blobs=0 environments=0

report() {  # KIND PATH REASON [COMMAND...]: one finding; with repair, COMMAND removes it
  local kind=$1 path=$2 reason=$3 done=-
  shift 3
  if [ -n "$repair" ] && [ $# -gt 0 ]; then
    if "$@"; then done=removed; else done=kept; fi
  fi
  printf '%s\t%q\t%s\t%s\n' "$kind" "$path" "$reason" "$done"
}

remove_same() {  # FILE INODE: remove FILE unless another writer has replaced it meanwhile
  [ "$(stat -c %i -- "$1" 2>/dev/null)" = "$2" ] && rm -f -- "$1"
}

if cd -- "$root/blobs" 2>/dev/null; then
  names=()
  declare -A inode=() size=()
  # One find lists every entry with its inode, size, age and type (no process per blob).
  while IFS= read -r -d '' entry; do
    ino=${entry%% *} entry=${entry#* }
    bytes=${entry%% *} entry=${entry#* }
    mtime=${entry%% *} entry=${entry#* }
    type=${entry%% *} name=${entry#* }
    case $name in
      .tmp-*|*.part)
        age=$((now - ${mtime%%[.,]*}))
        if [ "$age" -ge "$stale" ]; then
          report leftover "blobs/$name" "an upload unfinished for ${age}s (its writer was killed)" \
            remove_same "$name" "$ino"
        fi
        continue ;;
    esac
    if [ "$type" = f ] && [[ $name =~ ^[0-9a-f]{64}$ ]]; then
      names+=("$name") inode[$name]=$ino size[$name]=$bytes
    else
      report invalid "blobs/$name" "not a blob: no file named by a sha256 digest"
    fi
  done < <(find . -mindepth 1 -maxdepth 1 -printf '%i %s %T@ %y %f\0')
  # A file over CHUNK that sha256_named does not vouch for may be named by its chunk tree.
  declare -A good=()
  while read -r name; do good[$name]=1; done < <(sha256_named "${names[@]}")
  for name in "${names[@]}"; do
    blobs=$((blobs + 1))
    [ -n "${good[$name]}" ] && continue
    [ "${size[$name]}" -gt "$CHUNK" ] && blob_ok "$name" "$name" tree && continue
    [ -e "$name" ] || continue  # removed meanwhile (another fsck, a cache cleaner)
    report corrupt "blobs/$name" "its content does not hash to its name" \
      remove_same "$name" "${inode[$name]}"
  done
fi

if cd -- "$root/venvs" 2>/dev/null; then
  for name in *; do
    [ -d "$name" ] && [ ! -L "$name" ] || continue
    environments=$((environments + 1))
    [ -f "$name/.dstack-ready" ] && continue
    # Decided and removed under the build lock (venv.sh): a build under way holds it.
    {
      if flock -n 9 && [ ! -f "$name/.dstack-ready" ]; then
        report leftover "venvs/$name/" "an environment whose build stopped half-way" \
          rm -rf -- "$name"
      fi
    } 9>>"$name.lock"
  done
fi
printf 'checked\t%d\t%d\n' "$blobs" "$environments"
