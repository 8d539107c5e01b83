#!/bin/bash
# make deb: builds mosquitto-eventhook_<version>_<arch>.deb (and its -dbgsym)
# into packaging/out/ with dpkg-buildpackage. packaging/debian/ is copied to
# debian/ in a copy of the source tree (the project keeps no debian/ at its
# top level); debian/changelog is written from plugin/eh_version.h and
# debian/copyright from COPYING, so neither can disagree with its source.
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

work=$out/deb-build
src=$work/mosquitto-eventhook-$version
rm -rf "$work"
copy_source "$src"
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"

maintainer=$(maintainer)
cat > "$src/debian/changelog" <<CHANGELOG
mosquitto-eventhook ($version) unstable; urgency=medium

  * Upstream release $version, packaged from the project's source tree
    (version from plugin/eh_version.h; changes in the project's history).

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$(source_epoch)")
CHANGELOG
sh "$top/packaging/gen_copyright.sh" "$top/COPYING" > "$src/debian/copyright"

(cd "$src" && dpkg-buildpackage --build=binary --no-sign -jauto)

mkdir -p "$out"
# The .changes names the .debs and the .buildinfo beside it: they move together.
mv "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$out/"
rm -rf "$work"
ls -1 "$out"/mosquitto-eventhook*_"${version}"_*
