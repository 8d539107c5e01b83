# shellcheck shell=bash
# Sourced by build-deb.sh and build-rpm.sh: the project's version, the
# output directory, and a copy of the source tree to build from.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$top/packaging/out
# The one place the version is written.
version=$(sed -n 's/^#define EH_VERSION "\(.*\)"$/\1/p' "$top/plugin/eh_version.h")
if [ -z "$version" ]; then
	echo "no EH_VERSION in plugin/eh_version.h" >&2
	exit 1
fi

# The time of the last commit (or now, outside git), for dates written into
# the packages so that two builds of one commit are alike.
source_epoch() {
	git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s
}

# copy_source DEST: the files of the source tree (tracked and new files, not
# ignored ones such as build/ and packaging/out/) copied into DEST.
copy_source() {
	local dest=$1 f
	mkdir -p "$dest"
	if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$top" ls-files -z -co --exclude-standard |
			while IFS= read -r -d '' f; do
				# A tracked file deleted in the work tree is left out.
				[ -e "$top/$f" ] && printf '%s\0' "$f"
			done |
			tar -C "$top" --null -T - -cf - | tar -C "$dest" -xf -
	else
		tar -C "$top" --exclude=./.git --exclude='./build*' --exclude=./packaging/out -cf - . |
			tar -C "$dest" -xf -
	fi
}

# The maintainer, written once in packaging/debian/control, for the
# changelog entries of both packages.
maintainer() {
	sed -n 's/^Maintainer: *//p' "$top/packaging/debian/control"
}
