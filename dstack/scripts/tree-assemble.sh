#!/usr/bin/env bash
# Builds a job's files in TARGET from the host's blob cache CACHE. Reads one entry a line from
# stdin, tab-separated: "SHA256 MODE PATH" for a file, "L TARGET PATH" for a link.
# Like the laptop (dstack.storage.tree), the host never trusts that the laptop checked: a
# climbing or absolute path, a link leading out of the tree, a bad digest or mode is refused
# with exit 3 and a line on stderr, and the half-built tree is removed.
# Usage: tree-assemble.sh TARGET CACHE < ENTRIES
mkdir -p -- "$1" && cd "$1" || exit 1
root=$(pwd -P) blobs=$2
refuse() {
  printf 'refused %s\n' "$1" >&2
  cd / && rm -rf -- "$root"  # the job never starts on a half-checked tree
  exit 3
}
inside() {  # the path, its links followed (chains too), stays inside the tree
  local real
  real=$(realpath -m -- "$1" 2>/dev/null) || return 1
  [ "$real" = "$root" ] || [ "${real#"$root"/}" != "$real" ]
}
declare -A made
links=()
while IFS=$'\t' read -r kind value path; do
  case "/$path/" in */../*|*/./*|*//*) refuse "the path $(printf %q "$path")" ;; esac
  dir=${path%/*}
  if [ "$dir" != "$path" ] && [ -z "${made[$dir]}" ]; then
    inside "$dir" || refuse "$(printf %q "$path"): its folder leads outside the job's files"
    mkdir -p -- "$dir" || exit 1
    made[$dir]=1
  fi
  if [ -L "$path" ] || [ -f "$path" ]; then rm -f -- "$path"
  elif [ -e "$path" ]; then refuse "$(printf %q "$path"): a folder is in its place"; fi
  if [ "$kind" = L ]; then
    case "$value" in /*|"") refuse "the link $(printf %q "$path") -> $(printf %q "$value")" ;; esac
    ln -s -- "$value" "$path" || exit 1
    links+=("$path")
  else
    [[ $kind =~ ^[0-9a-f]{64}$ && $value =~ ^[0-7]{1,3}$ ]] || refuse "the entry $(printf %q "$path")"
    # cat, not cp: it reads the blob it opened to the end, even if a writer replaces a
    # damaged one by a rename meanwhile (cp gives up on a file replaced while copied)
    cat -- "$blobs/$kind" > "$path" && chmod -- "$value" "$path" || exit 1
  fi
done
for link in "${links[@]}"; do
  inside "$link" || refuse "the link $(printf %q "$link"): it leads outside the job's files"
done
