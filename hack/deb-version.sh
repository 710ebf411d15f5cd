#!/usr/bin/env bash
# Prints the Debian package version of the tree: Debian versions must start
# with a digit, so v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3+4.gabc (sorts after
# 1.2.3), an untagged tree -> 0.0.0~git.<sha> (sorts before any release);
# a dirty tree gets +dirty / .dirty.
set -euo pipefail
cd "$(dirname "$0")/.."
if d="$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null)"; then
  d="${d#v}"
  # 1.2.3-4-gabc-dirty -> 1.2.3+4.gabc.dirty ; 1.2.3-dirty -> 1.2.3+dirty
  echo "$d" | sed -e 's/-/+/' -e 's/-/./g'
else
  sha="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then sha="$sha.dirty"; fi
  echo "0.0.0~git.$sha"
fi
