#!/usr/bin/env bash
# fetch_kjv.sh: writes the King James Bible as plain text (one verse a line) for `loom prepare`.
#
# The text comes from Debian's bible-kjv (the `bible` program) and bible-kjv-text (its data),
# so the default corpus needs no network at prepare time. `bible` prefixes every verse with a
# reference such as "Ge1:1 " or "Rev22:21 "; those are stripped so the model learns prose,
# not citation syntax.
#
# Usage: scripts/fetch_kjv.sh [OUT]   (default: <repo>/data/kjv.txt)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../data/kjv.txt}"

if ! command -v bible >/dev/null 2>&1; then
  echo "fetch_kjv.sh: the \`bible\` program is not installed (Debian packages bible-kjv and bible-kjv-text); run scripts/install_deps.sh" >&2
  exit 3
fi

# The data folder is where bible-kjv-text put bible.data; ask dpkg rather than assume /usr/lib.
data_dir=""
if command -v dpkg >/dev/null 2>&1; then
  data_file="$(dpkg -L bible-kjv-text 2>/dev/null | grep '/bible\.data$' | head -n 1 || true)"
  [[ -n "$data_file" ]] && data_dir="$(dirname "$data_file")"
fi
if [[ -z "$data_dir" ]]; then
  for d in /usr/lib /usr/share/bible-kjv /usr/local/lib; do
    if [[ -f "$d/bible.data" ]]; then data_dir="$d"; break; fi
  done
fi
if [[ -z "$data_dir" ]]; then
  echo "fetch_kjv.sh: cannot find bible.data (Debian package bible-kjv-text); run scripts/install_deps.sh" >&2
  exit 3
fi

mkdir -p "$(dirname "$out")"
# Write beside the target and rename: a crash or Ctrl-C never leaves a half-written kjv.txt
# that a later `loom prepare` would trust.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
bible -f -p "$data_dir" "gen1:1-rev22:21" | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$tmp"

# Guard against a silently broken `bible` (wrong data, changed output format).
lines="$(wc -l < "$tmp")"
if [[ "$lines" -lt 31000 ]]; then
  echo "fetch_kjv.sh: bible printed only $lines verses (expected 31102) from $data_dir" >&2
  exit 1
fi
if grep -qE '^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ ' "$tmp"; then
  echo "fetch_kjv.sh: some verse references were not stripped; bible's output format changed?" >&2
  exit 1
fi
sync "$tmp" 2>/dev/null || sync
mv -f "$tmp" "$out"
trap - EXIT
echo "fetch_kjv.sh: wrote $out ($(wc -c < "$out") bytes, $lines verses)" >&2
