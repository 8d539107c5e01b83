#!/bin/bash
# make check-packages: builds the Debian and RPM packages and proves that
# they install, enable and remove cleanly.
#
# - The .deb is checked by lintian, then installed with apt (dpkg underneath)
#   into a clean Debian root made by debootstrap from the mirror this machine
#   uses, so the declared dependencies alone must be enough. There the real
#   /usr/sbin/mosquitto is started on a free loopback port: first with the
#   conf.d snippet as installed (plugin not loaded), then with the snippet
#   enabled (plugin loaded, file sink receives the events of an
#   mosquitto_pub client, an http sink loads libcurl), then after remove and
#   purge (the broker starts).
#   Without debootstrap (not root, no mirror) the same steps run on this
#   machine, which must then be root; set EH_PKG_ROOT=host to choose that.
# - The RPM is checked by rpmlint (with packaging/rpm/*.rpmlintrc), its file
#   list and requirements are compared with the .deb's.
#
# Each check prints "ok - name" or "FAIL - name" with its output; the last
# line is "packages: N passed, N failed". Everything made here is removed at
# exit (the packages stay in packaging/out/).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
# shellcheck source=../../packaging/common.sh
. packaging/common.sh

PYTHON=${PYTHON:-/usr/bin/python3}
EH_PKG_ROOT=${EH_PKG_ROOT:-debootstrap}
CLIENT_ID=eh-pkg-test
DEADLINE=30   # seconds, for waits that normally take milliseconds

passed=0
failed=0
tmp=$(mktemp -d /tmp/eh-packages.XXXXXX)
root=""        # the Debian root; empty when installing on this machine
host_installed=0

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
rpm_arch=$(rpm --eval '%{_arch}')
rpm_libdir=$(rpm --eval '%{_libdir}')
deb=$out/mosquitto-eventhook_${version}_${arch}.deb
dbgsym=$out/mosquitto-eventhook-dbgsym_${version}_${arch}.deb
changes=$out/mosquitto-eventhook_${version}_${arch}.changes
rpm_bin=$out/mosquitto-eventhook-${version}-1.${rpm_arch}.rpm
rpm_dbg=$out/mosquitto-eventhook-debuginfo-${version}-1.${rpm_arch}.rpm
rpm_src=$out/mosquitto-eventhook-${version}-1.src.rpm
deb_plugin=/usr/lib/$multiarch/mosquitto_eventhook.so
snippet=/etc/mosquitto/conf.d/eventhook.conf
# The test's own directory (in the root; under $tmp on this machine): broker
# configuration, log and the file sink's events.
testdir=/tmp/eh-pkgtest
events_file=$testdir/events.jsonl

# Runs a command in the Debian root, or on this machine.
in_root() {
	if [ -n "$root" ]; then chroot "$root" "$@"; else "$@"; fi
}

kill_broker() {
	local pid
	[ -s "$tmp/broker.pid" ] || return 0
	pid=$(cat "$tmp/broker.pid")
	rm -f "$tmp/broker.pid"
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq $((DEADLINE * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	kill_broker
	if [ -n "$root" ]; then
		umount "$root/proc" 2>/dev/null || true
	fi
	if [ "$host_installed" = 1 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq mosquitto-eventhook >/dev/null 2>&1 || true
	fi
	# Never delete through a mount point.
	if grep -q " $tmp/" /proc/mounts; then
		echo "left $tmp in place: something is still mounted under it" >&2
	else
		rm -rf --one-file-system "$tmp"
	fi
}
trap cleanup EXIT

# check NAME FUNCTION [ARGS]: runs the function in a subshell with set -e in
# force and counts the result; $ok is its exit status. (Called as the
# condition of an "if" or "||", bash would ignore set -e inside it, even in
# a subshell, so callers test $ok afterwards instead.)
ok=0
check() {
	local name=$1
	shift
	ok=0
	(
		set -eE
		trap 'echo "failed (line $LINENO): $BASH_COMMAND"' ERR
		"$@"
	) > "$tmp/check.log" 2>&1 &
	wait $! || ok=$?
	if [ "$ok" = 0 ]; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "FAIL - $name"
		sed 's/^/    /' "$tmp/check.log"
	fi
}

finish() {
	echo "packages: $passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit
}

# ---------------------------------------------------------------- building

build_deb() {
	bash packaging/build-deb.sh > "$tmp/build-deb.log" 2>&1 || { tail -40 "$tmp/build-deb.log"; return 1; }
	ls -l "$deb" "$dbgsym" "$changes"
}

build_rpm() {
	bash packaging/build-rpm.sh > "$tmp/build-rpm.log" 2>&1 || { tail -40 "$tmp/build-rpm.log"; return 1; }
	ls -l "$rpm_bin" "$rpm_dbg" "$rpm_src"
}

# Unpacks both packages once, for the checks that read their files.
unpack() {
	mkdir -p "$tmp/deb" "$tmp/dbgsym" "$tmp/rpm" "$tmp/rpmdbg"
	dpkg-deb -x "$deb" "$tmp/deb"
	dpkg-deb -e "$deb" "$tmp/deb/DEBIAN"
	dpkg-deb -x "$dbgsym" "$tmp/dbgsym"
	(cd "$tmp/rpm" && rpm2cpio "$rpm_bin" | cpio -idm --quiet)
	(cd "$tmp/rpmdbg" && rpm2cpio "$rpm_dbg" | cpio -idm --quiet)
}

# ---------------------------------------------------------------- static

lintian_clean() {
	lintian --fail-on error,warning "$changes"
}

rpmlint_clean() {
	local report
	report=$(rpmlint -r packaging/rpm/mosquitto-eventhook.rpmlintrc "$rpm_bin" "$rpm_dbg" "$rpm_src" 2>&1) || true
	echo "$report"
	echo "$report" | grep -q ' 0 errors, 0 warnings'
}

versions() {
	local v
	v=$(dpkg-deb -f "$deb" Version)
	echo "deb Version: $v, EH_VERSION: $version"
	[ "$v" = "$version" ]
	v=$(rpm -qp --qf '%{VERSION}' "$rpm_bin")
	echo "rpm VERSION: $v"
	[ "$v" = "$version" ]
	v=$(zcat "$tmp/deb/usr/share/doc/mosquitto-eventhook/changelog.gz" | head -n 1)
	echo "debian/changelog: $v"
	[ "$v" = "mosquitto-eventhook ($version) unstable; urgency=medium" ]
	v=$(rpm -qp --changelog "$rpm_bin" | head -n 1)
	echo "rpm changelog: $v"
	case $v in *" - $version-1") ;; *) return 1 ;; esac
	# The plugin prints the same version when it loads (seen in the broker
	# checks below); here, that it carries the string.
	strings "$tmp/deb$deb_plugin" | grep -F "$version"
}

# stripped_and_hardened PLUGIN DEBUG_ROOT: no symbol table or DWARF left,
# the separate debug file found by build id, and the hardening flags'
# traces (full RELRO, BIND_NOW, stack protector).
stripped_and_hardened() {
	local so=$1 dbg=$2 id
	if readelf -S "$so" | grep -Eq ' \.(symtab|debug_info) '; then
		echo "$so is not stripped"
		return 1
	fi
	id=$(readelf -n "$so" | sed -n 's/.*Build ID: *//p')
	echo "build id $id"
	[ -n "$id" ]
	ls -l "$dbg/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
	readelf -S "$dbg/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug" | grep -q ' \.debug_info '
	readelf -lW "$so" | grep -q GNU_RELRO
	readelf -dW "$so" | grep -Eq 'FLAGS.*(BIND_NOW|NOW)'
	readelf --dyn-syms -W "$so" | grep -q __stack_chk_fail
}

deb_binary() {
	stripped_and_hardened "$tmp/deb$deb_plugin" "$tmp/dbgsym"
}

rpm_binary() {
	stripped_and_hardened "$tmp/rpm$rpm_libdir/mosquitto_eventhook.so" "$tmp/rpmdbg"
}

# The event type names of plugin/eh_event.c.
event_names() {
	sed -n '/type_names\[EH_EV_COUNT\]/,/^};/s/.*= "\([a-z_.]*\)",$/\1/p' plugin/eh_event.c
}

man_page() {
	local page=$tmp/man.7 name key n=0 warnings
	zcat "$tmp/deb/usr/share/man/man7/mosquitto-eventhook.7.gz" > "$page"
	[ "$(event_names | wc -l)" -ge 8 ]
	# Every event type in events.txt and in the page; nothing stale listed.
	for name in $(event_names); do
		grep -q "^$name	" packaging/man/events.txt || { echo "$name missing from packaging/man/events.txt"; return 1; }
		grep -qx "\.B $name" "$page" || { echo "$name missing from the man page"; return 1; }
	done
	for name in $(grep -v '^#' packaging/man/events.txt | cut -f1 | grep .); do
		event_names | grep -qx "$name" || { echo "$name in events.txt is not an event type"; return 1; }
	done
	# Every option of the option tables (what the parser accepts).
	make -s build/eh_optdoc >/dev/null
	for key in $(build/eh_optdoc --markdown | grep -o '`plugin_opt_[a-z0-9_]*' | tr -d '`'); do
		grep -q "^\.B $key" "$page" || { echo "$key missing from the man page"; return 1; }
		n=$((n + 1))
	done
	echo "$(event_names | wc -l) event types, $n options"
	[ "$n" -gt 0 ]
	# The same test lintian makes: groff has nothing to say.
	warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
	[ -z "$warnings" ] || { echo "$warnings"; return 1; }
}

# snippet_commented FILE PLUGIN_PATH
snippet_commented() {
	local f=$1
	if grep -v '^[[:space:]]*#' "$f" | grep -q '[^[:space:]]'; then
		echo "$f has active lines:"
		grep -v '^[[:space:]]*#' "$f" | grep '[^[:space:]]'
		return 1
	fi
	grep -qx "#plugin $2" "$f"
}

conffile() {
	grep -qx "$snippet" "$tmp/deb/DEBIAN/conffiles"
	snippet_commented "$tmp/deb$snippet" "$deb_plugin"
	rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_bin" | grep -x "cn $snippet"
	snippet_commented "$tmp/rpm$snippet" "$rpm_libdir/mosquitto_eventhook.so"
	rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_bin" | grep -E '^l .*/COPYING$'
}

copyright() {
	local f=$tmp/deb/usr/share/doc/mosquitto-eventhook/copyright spdx
	spdx=$(sed -n 's/^SPDX-License-Identifier: *//p' COPYING)
	head -n 1 "$f" | grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/'
	[ "$(grep -c "^License: $spdx\$" "$f")" = 2 ]
	# The licence paragraph (after the second License: line) is COPYING's
	# text after the SPDX line; blank lines aside.
	diff <(awk '/^License: / { n++; next } n == 2' "$f" | sed 's/^ //' | grep -vx '\.') \
		<(sed '1,/^SPDX-License-Identifier:/d' COPYING | sed 's/[[:space:]]*$//' | grep .)
}

# The two packages' files, with the distribution differences mapped away:
# the library directory, compressed docs and man pages, and the files each
# distribution adds (Debian's changelog, copyright and lintian override; the
# RPM's licence directory).
deb_files() {
	dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\.||' |
		sed -e "s|^/usr/lib/$multiarch/|LIBDIR/|" -e 's|\.gz$||' |
		grep -Ev '^/usr/share/doc/mosquitto-eventhook/(changelog|copyright)$|^/usr/share/lintian/' | sort
}

rpm_files() {
	rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm_bin" | awk '$1 ~ /^-/ { print $2 }' |
		sed -e "s|^$rpm_libdir/|LIBDIR/|" -e 's|\.gz$||' |
		grep -Ev '^/usr/share/licenses/' | sort
}

same_files() {
	diff -u <(deb_files) <(rpm_files)
	deb_files
}

# The sonames the plugin needs.
needed() {
	readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort
}

# The sonames a sink loads at run time (dlopen; EH_*_SONAME in sinks/),
# which the packages must name themselves. None found is an error: the
# checks below would pass without checking them.
loaded() {
	local found
	found=$(sed -n 's/^#define EH_[A-Z0-9_]*_SONAME "\(.*\)"$/\1/p' sinks/*.h sinks/*/*.h | sort -u)
	[ -n "$found" ] || { echo "no EH_*_SONAME in sinks/: loaded() is out of date" >&2; echo "(none)"; return 1; }
	echo "$found"
}

rpm_requires() {
	local soname reqs
	reqs=$(rpm -qp --requires "$rpm_bin")
	echo "$reqs"
	diff <(needed "$tmp/deb$deb_plugin") <(needed "$tmp/rpm$rpm_libdir/mosquitto_eventhook.so")
	for soname in $(needed "$tmp/rpm$rpm_libdir/mosquitto_eventhook.so") $(loaded); do
		echo "$reqs" | grep -Eq "^${soname//./\\.}\(\)(\(64bit\))?$" || { echo "no requirement on $soname"; return 1; }
	done
	echo "$reqs" | grep -qx 'mosquitto >= 2.0'
}

# Each soname the plugin needs maps, on this machine, to the Debian package
# that ships it: that package must be among the Depends.
deb_depends() {
	local depends soname pkg
	depends=$(dpkg-deb -f "$deb" Depends)
	echo "Depends: $depends"
	echo "$depends" | grep -q 'mosquitto (>= 2.0)'
	for soname in $(needed "$tmp/deb$deb_plugin") $(loaded); do
		# The package whose file is the soname (link) in the multiarch
		# directory; /lib or /usr/lib, as dpkg knows it.
		pkg=$(dpkg -S "*/$multiarch/$soname" | cut -d: -f1 | sort -u)
		[ "$(echo "$pkg" | wc -w)" = 1 ] || { echo "$soname: packages '$pkg'"; return 1; }
		echo "$soname -> $pkg"
		echo "$depends" | tr ',' '\n' | grep -Eq "^ *$pkg( |$)" || { echo "$pkg ($soname) not in Depends"; return 1; }
	done
}

# ---------------------------------------------------------------- installing

# The Debian mirror apt uses here (deb822 .sources or one-line .list).
apt_mirror() {
	{
		sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
		sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | grep -E '/debian/?$' | head -n 1
}

make_root() {
	local suite mirror
	suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
	mirror=$(apt_mirror)
	echo "debootstrap --variant=minbase $suite from $mirror"
	[ -n "$suite" ] && [ -n "$mirror" ]
	debootstrap --variant=minbase "$suite" "$tmp/root" "$mirror" > "$tmp/debootstrap.log" 2>&1 ||
		{ tail -20 "$tmp/debootstrap.log"; return 1; }
	# No service may start in the root.
	printf '#!/bin/sh\nexit 101\n' > "$tmp/root/usr/sbin/policy-rc.d"
	chmod 755 "$tmp/root/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$tmp/root/etc/resolv.conf"
}

install_deb() {
	local soname
	cp "$deb" "$root/tmp/"
	export DEBIAN_FRONTEND=noninteractive
	in_root apt-get update -qq
	in_root apt-get install -y -qq --no-install-recommends "/tmp/${deb##*/}" > "$tmp/apt.log" 2>&1 ||
		{ cat "$tmp/apt.log"; return 1; }
	in_root dpkg-query -W -f='${Status} ${Version}\n' mosquitto-eventhook | tee /dev/stderr |
		grep -qx "install ok installed $version"
	in_root dpkg-query -W -f='${Conffiles}\n' mosquitto-eventhook | grep -q " $snippet "
	# Every library the plugin needs is there, and those its sinks load.
	if in_root ldd "$deb_plugin" | grep 'not found'; then return 1; fi
	for soname in $(loaded); do
		in_root ldconfig -p | awk -v so="$soname" '$1 == so { print; found = 1 } END { exit !found }' ||
			{ echo "$soname is not installed"; return 1; }
	done
}

# A broker configuration of our own that reads conf.d like Debian's
# /etc/mosquitto/mosquitto.conf does, on a free loopback port and without a
# pid file or persistence, so it can run beside anything on this machine.
# The log goes to a file, which the broker flushes line by line (its stdout
# is block-buffered when not a terminal).
write_broker_conf() {
	local port
	port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	mkdir -p "$root$testdir"
	# The broker writes its log as the mosquitto user.
	chmod 1777 "$root$testdir"
	cat > "$root$testdir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $testdir/broker.log
include_dir /etc/mosquitto/conf.d
CONF
	echo "$port" > "$tmp/port"
}

# start_broker LOG: starts /usr/sbin/mosquitto, returns once it runs; LOG
# gets the broker's log when it stops (stop_broker).
start_broker() {
	local log=$root$testdir/broker.log pid
	rm -f "$log"
	# Started directly (chroot execs the broker), not through in_root: $!
	# must be the broker's pid, not a subshell's.
	if [ -n "$root" ]; then
		chroot "$root" /usr/sbin/mosquitto -c "$testdir/mosquitto.conf" > "$tmp/broker.out" 2>&1 &
	else
		/usr/sbin/mosquitto -c "$testdir/mosquitto.conf" > "$tmp/broker.out" 2>&1 &
	fi
	pid=$!
	echo "$pid" > "$tmp/broker.pid"
	for _ in $(seq $((DEADLINE * 10))); do
		if grep -qs 'mosquitto version .* running' "$log"; then return 0; fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "the broker exited:"; cat "$tmp/broker.out" "$log"; rm -f "$tmp/broker.pid"; return 1
		fi
		sleep 0.1
	done
	echo "the broker did not start:"; cat "$tmp/broker.out" "$log"
	kill_broker
	return 1
}

# stop_broker LOG: stops it and keeps its log in LOG.
stop_broker() {
	kill_broker
	cat "$tmp/broker.out" "$root$testdir/broker.log" > "$1"
}

publish() {
	mosquitto_pub -h 127.0.0.1 -p "$(cat "$tmp/port")" -i "$CLIENT_ID" -t eh/pkgtest -m hello -q 1
}

# The broker starts, a client connects, and the plugin is not loaded.
broker_without_plugin() {
	local log=$1
	start_broker
	publish
	stop_broker "$log"
	cat "$log"
	if grep -E 'Loading plugin|eventhook:' "$log"; then echo "the plugin was loaded"; return 1; fi
}

not_enabled() {
	write_broker_conf
	broker_without_plugin "$tmp/broker-installed.log"
}

enabled() {
	local log=$tmp/broker-enabled.log
	rm -f "$root$events_file"
	# What the administrator does: uncomment the plugin line and a sink
	# (whose file is the test's, not /var/log/mosquitto/ on this machine).
	sed -i -e 's/^#plugin /plugin /' -e "s|^#plugin_opt_file_path .*|plugin_opt_file_path $events_file|" "$root$snippet"
	# And an http sink, which loads libcurl when it starts: the package's
	# own dependency on it (no peer listens: its events stay queued).
	printf 'plugin_opt_http_url http://127.0.0.1:9/hook\nplugin_opt_shutdown_timeout_ms 500\n' >> "$root$snippet"
	grep -v '^#' "$root$snippet" | grep .
	start_broker
	grep "eventhook: mosquitto-eventhook $version loading" "$root$testdir/broker.log"
	publish
	# The file sink writes on its own thread: wait for the last event.
	"$PYTHON" - "$root$events_file" "$CLIENT_ID" "$DEADLINE" <<'PY'
import json, os, sys, time
path, client, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
while True:
    types = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            events = [json.loads(line) for line in f if line.endswith("\n")]
        types = [e["event"] for e in events if e.get("clientid") == client]
    if "client.disconnected" in types or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(types)
want = ["client.connect", "client.connected", "client.disconnected"]
sys.exit(0 if types == want else f"expected {want}")
PY
	stop_broker "$log"
	cat "$log"
	grep -q 'eventhook: file: stopped; enqueued 3, delivered 3, failed 0, dropped 0' "$log"
	grep -q 'eventhook: http: stopped; enqueued 3, delivered 0' "$log"
}

removed() {
	in_root apt-get remove -y -qq mosquitto-eventhook > "$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log"; return 1; }
	[ ! -e "$root$deb_plugin" ]
	# dpkg keeps a conffile the administrator changed until purge.
	in_root dpkg-query -W -f='${Status}\n' mosquitto-eventhook | grep -qx 'deinstall ok config-files'
	grep -q '^plugin ' "$root$snippet"
}

purged() {
	in_root apt-get purge -y -qq mosquitto-eventhook > "$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log"; return 1; }
	[ ! -e "$root$snippet" ]
	if in_root dpkg-query -W -f='${Status}\n' mosquitto-eventhook 2>/dev/null | grep -q .; then
		in_root dpkg-query -W -f='${Status}\n' mosquitto-eventhook
		return 1
	fi
	[ ! -e "$root/usr/share/doc/mosquitto-eventhook" ]
	[ ! -e "$root/usr/share/man/man7/mosquitto-eventhook.7.gz" ]
	broker_without_plugin "$tmp/broker-purged.log"
}

# ---------------------------------------------------------------- main

check "make deb: $(basename "$deb") and -dbgsym" build_deb
[ "$ok" = 0 ] || finish
check "make rpm: $(basename "$rpm_bin"), -debuginfo, source RPM" build_rpm
[ "$ok" = 0 ] || finish
check "unpack both packages" unpack
[ "$ok" = 0 ] || finish
check "lintian: no errors, no warnings" lintian_clean
check "rpmlint: no errors, no warnings (filters in packaging/rpm/mosquitto-eventhook.rpmlintrc)" rpmlint_clean
check "version $version from plugin/eh_version.h in both packages and changelogs" versions
check "deb: plugin stripped, debug symbols in -dbgsym, hardened (relro, now, stack protector)" deb_binary
check "rpm: plugin stripped, debug symbols in -debuginfo, hardened (relro, now, stack protector)" rpm_binary
check "man page: every event type of plugin/eh_event.c and every option, no groff warnings" man_page
check "conf.d snippet: a conffile (deb), %config(noreplace) (rpm), every line commented" conffile
check "deb copyright: DEP-5, licence text from COPYING" copyright
check "rpm and deb install the same files" same_files
check "rpm requires the plugin's sonames and mosquitto >= 2.0" rpm_requires
check "deb depends on the package of each soname and on mosquitto (>= 2.0)" deb_depends

if [ "$EH_PKG_ROOT" = debootstrap ] && [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
	check "clean Debian root made by debootstrap" make_root
	if [ "$ok" = 0 ]; then
		root=$tmp/root
		# The plugin reads /proc/self/cmdline to find the broker's -c file.
		mount -t proc proc "$root/proc"
	else
		echo "# debootstrap failed: installing on this machine instead"
		EH_PKG_ROOT=host
	fi
elif [ "$EH_PKG_ROOT" = debootstrap ]; then
	echo "# no debootstrap or not root: installing on this machine instead"
	EH_PKG_ROOT=host
fi
if [ "$EH_PKG_ROOT" = host ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "# installing needs root"
		failed=$((failed + 1))
		finish
	fi
	if dpkg-query -W -f='${Status}' mosquitto-eventhook 2>/dev/null | grep -q installed; then
		echo "# mosquitto-eventhook is already installed here: not touching it"
		failed=$((failed + 1))
		finish
	fi
	host_installed=1
	# The broker's user must reach its log and events under $tmp.
	chmod 711 "$tmp"
	testdir=$tmp/run
	events_file=$testdir/events.jsonl
fi
where=${root:+the Debian root}
where=${where:-this machine}
check "apt installs the .deb in $where with its declared dependencies only" install_deb
[ "$ok" = 0 ] || finish
check "installed, not enabled: the broker starts without the plugin" not_enabled
check "snippet enabled: the plugin loads ($version) and the file sink gets the client's events, the http sink loads libcurl" enabled
check "remove: plugin gone, the edited conffile kept" removed
check "purge: everything gone, the broker starts" purged
host_installed=0
finish
