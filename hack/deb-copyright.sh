#!/usr/bin/env bash
# Writes the router agent's Debian copyright file (machine-readable format,
# DEP-5) to stdout: bgplb itself, then every Go module linked into
# bgplb-routeragent with its license. The MIT, BSD and ISC licenses require
# their notice in every copy, so their texts are included in full; Apache-2.0
# and MPL-2.0 point to /usr/share/common-licenses. Generated from the module
# list at build time, so it cannot go stale; a module whose license it cannot
# tell fails the build.
#
# Usage: hack/deb-copyright.sh > dist/build/stage/copyright
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: bgplb
Upstream-Contact: https://github.com/bgplb/bgplb/security/advisories
Source: https://github.com/bgplb/bgplb
Comment: bgplb-routeragent is a static Go binary. Besides bgplb's own code it
 contains the Go standard library and the Go modules listed below, each under
 its own license.

Files: *
Copyright: 2026 The bgplb Authors
License: Apache-2.0

HEAD

license_of() {
  local f=$1
  if grep -q "Apache License" "$f"; then echo Apache-2.0
  elif grep -q "Mozilla Public License" "$f"; then echo MPL-2.0
  elif grep -q "Permission is hereby granted, free of charge" "$f"; then echo MIT
  elif grep -q "Permission to use, copy, modify, and/or distribute" "$f"; then echo ISC
  elif grep -q "Redistribution and use" "$f"; then
    if grep -qi "neither the name\|names of its contributors" "$f"; then echo BSD-3-Clause; else echo BSD-2-Clause; fi
  else echo unknown; fi
}

# One paragraph of license text as DEP-5 wants it: each line indented by
# one space, empty lines as " .".
indent() { sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1"; }

goroot="$("$GO" env GOROOT)"
{
  echo "golang.org/go $("$GO" env GOVERSION) $goroot/LICENSE"
  "$GO" list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/bgplb-routeragent |
    sort -u | while read -r path version dir; do
      f=$(ls "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* 2>/dev/null | head -1 || true)
      echo "$path $version ${f:-none}"
    done
} | while read -r path version file; do
  if [[ "$file" == none ]]; then
    echo "deb-copyright: $path has no license file" >&2; exit 1
  fi
  lic=$(license_of "$file")
  if [[ "$lic" == unknown ]]; then
    echo "deb-copyright: cannot tell the license of $path ($file)" >&2; exit 1
  fi
  holders=$(grep -Eoi '^[[:space:]]*copyright[[:space:]]+(\(c\)[[:space:]]*)?[0-9].*' "$file" | sed -E -e 's/^[[:space:]]*//' -e 's/^[Cc]opyright[[:space:]]*(\([cC]\))?[[:space:]]*//' | sort -u | head -5 || true)
  echo "Files: go-modules/$path/*"
  if [[ -n "$holders" ]]; then
    echo "Copyright: $(head -1 <<<"$holders")"
    tail -n +2 <<<"$holders" | sed 's/^/ /'
  else
    echo "Copyright: the $path authors"
  fi
  case "$lic" in
    Apache-2.0 | MPL-2.0)
      echo "License: $lic"
      echo " On Debian systems, the complete text of this license is in"
      echo " /usr/share/common-licenses/$lic."
      ;;
    *)
      echo "License: $lic"
      indent "$file"
      ;;
  esac
  echo "Comment: $path $version"
  echo
done

cat <<'TAIL'
License: Apache-2.0
 On Debian systems, the complete text of the Apache License, Version 2.0,
 is in /usr/share/common-licenses/Apache-2.0.
TAIL
