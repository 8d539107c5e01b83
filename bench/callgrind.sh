#!/bin/sh
# Instructions on the broker thread, counted by valgrind's callgrind
# (deterministic: repeatable on a noisy machine, unlike a stopwatch).
#
# 1. For each configuration (no plugin; plugin with no sink interested; file
#    sink with events '*'; file and local sinks with events '*'; file, http,
#    kafka and mqtt sinks, peers unreachable; all five sinks; the last two
#    with the local sink batching), mosquitto
#    runs under callgrind, collection is zeroed once it listens
#    (callgrind_control -z), a fixed load is driven by bench/loadgen (CYCLES
#    cycles of: connect, subscribe, 4 QoS 1 publishes, unsubscribe,
#    disconnect, which fires every callback type) and dumped before
#    shutdown (callgrind_control -d). From the broker's main thread (--separate-threads) we get the
#    total instructions per cycle, and from callgrind_annotate's caller tree
#    each plugin callback's inclusive instructions and call count.
# 2. Allocation proof: one more run with collection on only inside the
#    plugin's callbacks (--toggle-collect=on_*), so that any instruction
#    of malloc/calloc/realloc in that profile ran inside a callback; the
#    table shows who called them.
#
# Usage: sh bench/callgrind.sh [cycles]     (make bench runs it)
#   CG_PAYLOAD=BYTES   payload of each publish (32); with large payloads keep
#                      cycles x 4 x BYTES under queue_bytes (32 MiB), or the
#                      rings of unreachable sinks fill and drop
#   CG_CONFIGS="none file ..."   only these configurations
#   CG_EXTRA="key value"  one more plugin option in every configuration that
#                      loads the plugin, e.g. CG_EXTRA="payload_max_bytes 256"
#   CG_LOAD="loadgen options"  another load shape (default "-c 4 -m publish -q 1
#                      -N 4"), e.g. throughput.py's publish0: "-c 32 -m publish -q 0
#                      -N 10"; the tables' headings still describe the default
#   CG_LINGER=MS      local_batch_linger_ms of the two batched configurations
#                      (5). Under valgrind the broker runs tens of times
#                      slower, so 5 ms collects far fewer events per message
#                      than at full speed; the report says how many it got,
#                      bench/local_batches.py how many the real broker gets
#   CG_COPY=loop       count large copies (8 KiB and more under valgrind,
#                      whose CPUID has no FSRM) as glibc's vector loop instead
#                      of its `rep movsb`, which callgrind counts once per byte
#                      moved: a tunable that selects the loop in every run,
#                      the plugin-free one included. Per byte overstates a
#                      copy, the loop's count understates it (about 12 bytes
#                      a cycle natively): the truth lies between
#   CG_REPORT=FILE     also keep the raw figures, one JSON line per run
#                      (test/valgrind/capture_cost.py reads them)
set -eu
KEEP=${KEEP:-}
BUILD=${BUILD:-build}
CYCLES=${1:-${CG_CYCLES:-1000}}
PAYLOAD=${CG_PAYLOAD:-32}
CONFIGS=${CG_CONFIGS:-none idle file filelocal fourrings every filelocalbatch everybatch allocs allocslocal}
EXTRA=${CG_EXTRA:-}
LOAD=${CG_LOAD:--c 4 -m publish -q 1 -N 4}
LINGER=${CG_LINGER:-5}
case $LINGER in
'' | *[!0-9]*) echo "callgrind.sh: CG_LINGER is a number of milliseconds" >&2; exit 1 ;;
esac
tunables=
case ${CG_COPY:-rep} in
rep) ;;
loop)
	# glibc 2.36: copies at or above the first threshold use rep movsb,
	# above the second non-temporal stores; raised out of reach, every large
	# copy is the AVX loop.
	tunables=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.cpu.x86_rep_movsb_threshold=1099511627776:glibc.cpu.x86_non_temporal_threshold=1099511627776
	;;
*) echo "callgrind.sh: CG_COPY is rep or loop" >&2; exit 1 ;;
esac
plugin=$(readlink -f "$BUILD/mosquitto_eventhook.so")
loadgen=$(readlink -f "$BUILD/bench/loadgen")
here=$(cd "$(dirname "$0")" && pwd)
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)"; exit 1; }
dir=$(mktemp -d /tmp/eh-callgrind.XXXXXX)
vg_pid=""
cleanup() {
	if [ -n "$vg_pid" ]; then
		kill "$vg_pid" 2>/dev/null || true
		wait "$vg_pid" 2>/dev/null || true
	fi
	[ -n "$KEEP" ] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# run <name> <whole|toggle> [plugin options...]   (name "none": no plugin)
run() {
	name=$1
	how=$2
	shift 2
	case " $CONFIGS " in *" $name "*) ;; *) return 0 ;; esac
	port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	{
		echo "listener $port 127.0.0.1"
		echo "allow_anonymous true"
		echo "set_tcp_nodelay true"
		echo "connection_messages false"
		echo "user $(id -un)"
		echo "log_dest file $dir/$name.log"
		if [ "$name" != none ]; then
			echo "plugin $plugin"
			for o in "$@"; do echo "plugin_opt_$o"; done
			if [ -n "$EXTRA" ]; then echo "plugin_opt_$EXTRA"; fi
		fi
	} > "$dir/$name.conf"
	if [ "$how" = whole ]; then
		set -- --separate-threads=yes
	else
		set -- --toggle-collect='on_*' --toggle-collect='*_tail'
	fi
	env ${tunables:+GLIBC_TUNABLES=$tunables} valgrind --tool=callgrind --callgrind-out-file="$dir/$name.cg" "$@" \
		/usr/sbin/mosquitto -c "$dir/$name.conf" > "$dir/$name.vg" 2>&1 &
	vg_pid=$!
	i=0
	until /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 600 ] || { echo "broker under valgrind did not start"; cat "$dir/$name.vg"; exit 1; }
		sleep 0.1
	done
	# Zero the counters once it listens, dump them right after the load:
	# start-up and shutdown are not counted.
	[ "$how" = whole ] && callgrind_control -z "$vg_pid" >/dev/null 2>&1
	# One client id and topic prefix for every configuration: the broker's
	# per-byte work (UTF-8 checks, copies) must not differ between them.
	# shellcheck disable=SC2086 # LOAD is a list of options
	"$loadgen" -p "$port" -w 0 -n "$CYCLES" $LOAD -s "$PAYLOAD" -i cg \
		> "$dir/$name.lg"
	[ "$how" = whole ] && callgrind_control -d "$vg_pid" >/dev/null 2>&1
	kill "$vg_pid"
	wait "$vg_pid" || true
	vg_pid=""
	main="$dir/$name.cg"
	[ "$how" = whole ] && main="$dir/$name.cg.1-01"
	callgrind_annotate --inclusive=yes --tree=caller --threshold=100 --auto=no "$main" > "$dir/$name.txt" 2>/dev/null
	# the loadgen's own count: cycles actually completed (in-flight ones finish too)
	done_cycles=$(sed -n 's/.*RESULT .*all_cycles=\([0-9]*\).*/\1/p' "$dir/$name.lg")
	/usr/bin/python3 "$here/cg_table.py" "$name" "$how" "$main" "$dir/$name.txt" "$dir/$name.log" "$done_cycles" \
		>> "$dir/report"
}

run none whole
run idle whole "file_path $dir/idle.jsonl" "file_events client.connect_failed"
run file whole "events *" "file_path $dir/file.jsonl"
run filelocal whole "events *" "file_path $dir/all.jsonl" 'local_topic $events/{event}/{clientid}'
# Peers on a closed port: events wait in the rings (9,000 of 65,536 slots),
# which is all the broker thread does for these sinks.
closed=127.0.0.1:9
run fourrings whole "events *" "file_path $dir/four.jsonl" "http_url http://$closed/" "kafka_brokers $closed" \
	"mqtt_uri tcp://$closed"
run every whole "events *" "file_path $dir/every.jsonl" 'local_topic $events/{event}/{clientid}' \
	"http_url http://$closed/" "kafka_brokers $closed" "mqtt_uri tcp://$closed"
# The local sink batching (docs/sinks/local.md): one message for the events
# queued together, instead of one per event.
run filelocalbatch whole "events *" "file_path $dir/allb.jsonl" 'local_topic $events/all' "local_batch_max 1000" \
	"local_batch_linger_ms $LINGER"
run everybatch whole "events *" "file_path $dir/everyb.jsonl" 'local_topic $events/all' "local_batch_max 1000" \
	"local_batch_linger_ms $LINGER" \
	"http_url http://$closed/" "kafka_brokers $closed" "mqtt_uri tcp://$closed"
run allocs toggle "events *" "file_path $dir/allocs.jsonl"
run allocslocal toggle "events *" "file_path $dir/allocs.jsonl" 'local_topic $events/{event}/{clientid}'
[ -z "${CG_REPORT:-}" ] || cp "$dir/report" "$CG_REPORT"
/usr/bin/python3 "$here/cg_table.py" --report "$dir/report" "$CYCLES"
