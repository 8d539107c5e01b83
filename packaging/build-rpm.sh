#!/bin/bash
# make rpm: builds the binary RPM, its -debuginfo and the source RPM into
# packaging/out/ with rpmbuild from packaging/rpm/mosquitto-eventhook.spec.
#
# The spec is built from a copy that starts with the version from
# plugin/eh_version.h and ends with a generated %changelog entry, so the
# version is written in one place and the source RPM rebuilds on its own.
#
# On Debian (an rpm without a database of installed packages and without
# redhat-rpm-config):
# - BuildRequires cannot be checked, so rpmbuild runs with --nodeps (the
#   Debian build dependencies are installed by make check-packages instead);
# - %{optflags} is only "-O2 -g" and %{build_ldflags} is undefined, so the
#   hardening flags of dpkg-buildflags are passed in as those macros;
# - debug packages are off by default, so _enable_debug_packages is set
#   (find-debuginfo comes from Debian's debugedit package, eu-strip from
#   elfutils);
# - brp-compress uses "read -d", which Debian's /bin/sh (dash) lacks, so man
#   pages stay uncompressed unless it is run with bash.
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

top_rpm=$out/rpmbuild
rm -rf "$top_rpm"
mkdir -p "$top_rpm"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}

# Source tarball: the source tree under mosquitto-eventhook-<version>/.
stage=$top_rpm/stage
copy_source "$stage/mosquitto-eventhook-$version"
tar -C "$stage" --owner=0 --group=0 --sort=name --mtime="@$(source_epoch)" \
	-czf "$top_rpm/SOURCES/mosquitto-eventhook-$version.tar.gz" "mosquitto-eventhook-$version"
rm -rf "$stage"

spec=$top_rpm/SPECS/mosquitto-eventhook.spec
packager=$(maintainer)
{
	printf '%%global eh_version %s\n' "$version"
	cat "$top/packaging/rpm/mosquitto-eventhook.spec"
	printf '* %s %s - %s-1\n' "$(LC_ALL=C date -u -d "@$(source_epoch)" '+%a %b %d %Y')" "$packager" "$version"
	printf -- '- Upstream release %s (version from plugin/eh_version.h).\n' "$version"
} > "$spec"

args=(--define "_topdir $top_rpm")
if [ -z "$(rpm --eval '%{?build_ldflags}')" ] && command -v dpkg-buildflags >/dev/null; then
	# Not a Red Hat rpm: supply what redhat-rpm-config would (see above).
	# The %install redefinition is redhat-rpm-config's: it declares the
	# -debuginfo package once %prep has set up the build directory.
	flags="hardening=+all reproducible=-fixfilepath,-fixdebugpath"
	cat > "$top_rpm/macros.debian" <<MACROS
%optflags $(DEB_BUILD_MAINT_OPTIONS=$flags dpkg-buildflags --get CPPFLAGS) $(DEB_BUILD_MAINT_OPTIONS=$flags dpkg-buildflags --get CFLAGS)
%build_ldflags $(DEB_BUILD_MAINT_OPTIONS=$flags dpkg-buildflags --get LDFLAGS)
%_enable_debug_packages 1
%__os_install_post \\
    bash /usr/lib/rpm/brp-compress %{_prefix} \\
    /usr/lib/rpm/brp-elfperms \\
    /usr/lib/rpm/brp-strip %{__strip} \\
    /usr/lib/rpm/brp-strip-comment-note %{__strip} %{__objdump} \\
%{nil}
%install %{?_enable_debug_packages:%{?buildsubdir:%{debug_package}}}\\
%%install\\
%{nil}
MACROS
	args+=(--nodeps --load "$top_rpm/macros.debian")
fi
rpmbuild -ba "${args[@]}" "$spec"

mkdir -p "$out"
mv "$top_rpm"/RPMS/*/*.rpm "$top_rpm"/SRPMS/*.rpm "$out/"
rm -rf "$top_rpm"
ls -1 "$out"/mosquitto-eventhook-*"$version"-*.rpm
