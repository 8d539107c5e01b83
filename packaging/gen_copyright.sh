#!/bin/sh
# Writes debian/copyright (machine-readable, DEP-5) to standard output from
# COPYING: the "Copyright" lines become the Copyright field and the licence
# text after the SPDX line becomes the License paragraph, so the package's
# copyright file always says what COPYING says.
#   sh packaging/gen_copyright.sh COPYING
set -eu
[ $# -eq 1 ] || { echo "usage: gen_copyright.sh COPYING" >&2; exit 2; }
copying=$1
spdx=$(sed -n 's/^SPDX-License-Identifier: *//p' "$copying" | head -n 1)
[ -n "$spdx" ] || { echo "gen_copyright.sh: no SPDX-License-Identifier line in $copying" >&2; exit 1; }
holders=$(sed -n 's/^Copyright *(c) *//p' "$copying")
[ -n "$holders" ] || { echo "gen_copyright.sh: no Copyright line in $copying" >&2; exit 1; }
cat <<HEAD
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mosquitto-eventhook
Source: the mosquitto-eventhook source tree (upstream-maintained native package)

Files: *
Copyright:$(printf '%s\n' "$holders" | sed 's/^/ /')
License: $spdx

License: $spdx
HEAD
# The licence text: everything after the SPDX line, minus leading blank
# lines; each line indented by one space, empty lines written as " .".
# Blank lines at the end are dropped.
sed -n '/^SPDX-License-Identifier:/,$p' "$copying" | sed 1d | sed '/./,$!d' |
	sed 's/[[:space:]]*$//' |
	awk 'NF { while (blank) { print " ."; blank-- } print " " $0; next } { blank++ }'
