#!/bin/sh
# Kafka sink benchmark (not a test). Every figure comes from one run against
# one librdkafka mock cluster (build/test/kafka_peer mock, one broker on
# loopback), so the ratios compare like with like. docs/performance-kafka.md
# explains the method; in short:
#
#   1. Sink: N message.publish events from 64 MQTT clients are captured while
#      the cluster is down (the first 100,000 wait in librdkafka's queue, the
#      rest in the sink's ring); then the cluster comes back and the sink
#      drains the backlog.
#   2. Library: kafka_peer replay produces the very messages the sink
#      produced in round 0 (200,000 read back from the cluster: same
#      values, keys, headers; put back in the sink's order by their seq;
#      cycled through to make N), with the sink's default configuration, in the same
#      scenario: produced while the cluster is down until librdkafka's queue
#      is full, then the cluster comes back. Also once with the cluster up
#      from the start (timed the same way, and by its own clock from the
#      first produce to the last delivery report), in case the outage
#      scenario slows the library down.
#   Both drains are timed by the same clock: kafka_peer watch asks the
#   cluster every millisecond how many messages the topic holds. The
#   headline is the second half of the drain (from N/2 messages in the
#   cluster to N): by then the sink is out of its retry backoff and the
#   messages it had put in librdkafka's queue during the outage are gone,
#   so the figure is the sink's own steady rate (or the library's, if that
#   is lower). The whole drain (first message to the N-th) is shown too.
#   Rounds alternate library and sink; medians and the median of the
#   per-round ratios are printed.
#   CPU per message over the same drain (from the cluster's return until
#   the clock sees all N), from /proc/<pid>/task/*/stat, utime + stime:
#   the sink's side is every thread of the broker process but its main
#   thread (the sink thread and librdkafka's), the library's the whole
#   replay process, and the mock cluster's process on both sides. Unlike
#   the rate it does not depend on how the shared cores were scheduled, so
#   it shows an efficiency difference that the rates' spread hides; the
#   rate ratio stays the headline (issue 7 asks for it).
#   3. End to end and broker throughput with one mosquitto_pub (as before).
#
#   sh bench/bench_kafka.sh [N [ROUNDS]]    (default 1000000 3; make and
#                                            make build/test/kafka_peer first)
set -eu
N=${1:-1000000}
ROUNDS=${2:-3}
CLIENTS=64
PER=$((N / CLIENTS))
N=$((PER * CLIENTS))
BUILD=${BUILD:-build}
PLUGIN=$(pwd)/$BUILD/mosquitto_eventhook.so
PEER=$(pwd)/$BUILD/test/kafka_peer
[ -x "$PEER" ] && [ -f "$PLUGIN" ] || { echo "run make $BUILD/test/kafka_peer first" >&2; exit 2; }
TMP=$(mktemp -d)
MOCK_PID=
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' "$2" | tail -1; }
wait_line() { # $1 file, $2 pattern
	while ! grep -q "$2" "$1" 2>/dev/null; do sleep 0.02; done
}
# utime + stime ticks of process $1's threads: all of them; ($2 = nomain)
# all but the main thread; ($2 = main) the main thread only; ($2 = comm:NAME)
# the threads named NAME only. The comm field may hold spaces, so fields
# are counted after its closing parenthesis.
cpu_ticks() {
	for t in /proc/"$1"/task/*; do
		case "${2:-}" in
		nomain) [ "${t##*/}" = "$1" ] && continue ;;
		main) [ "${t##*/}" = "$1" ] || continue ;;
		comm:*) [ "$(cat "$t/comm" 2>/dev/null)" = "${2#comm:}" ] || continue ;;
		esac
		sed 's/.*) //' "$t/stat" 2>/dev/null || true
	done | awk '{ s += $12 + $13 } END { print s + 0 }'
}
# The commit the plugin was built from: BUILD may be another worktree's
# build directory (or a link to one), whose checkout is its parent.
build_commit() { (cd "$(readlink -f "$BUILD")/.." && git describe --always --dirty 2>/dev/null) || echo -; }
HZ=$(getconf CLK_TCK)
# microseconds of CPU per message: $1 ticks before, $2 after, $3 messages
us_per() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz / n * 1e6 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.10g\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

mkfifo "$TMP/mock.in"
"$PEER" mock 1 <"$TMP/mock.in" >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
exec 9>"$TMP/mock.in"
wait_line "$TMP/mock.out" bootstrap
BS=$(awk '/bootstrap/ { print $2 }' "$TMP/mock.out")
mock() { echo "$*" >&9; }
# The sink's reconnect settings, given to the library run as well.
BACKOFF="reconnect.backoff.ms=10 reconnect.backoff.max.ms=50"

# Realistic variety: 64 devices on 8 sites publishing small JSON readings.
awk -v n="$PER" 'BEGIN { for (i = 1; i <= n; i++)
	printf "{\"seq\":%d,\"temp\":%.1f,\"rh\":%d,\"bat\":%.2f,\"ok\":%s}\n", i, 18 + (i * 37 % 120) / 10,
		30 + i * 13 % 50, 3 + (i * 7 % 120) / 100, (i % 17) ? "true" : "false" }' >"$TMP/payloads"

start_broker() { # $1: with plugin (1) or not (0); $2: Kafka topic
	PORT=$(port)
	{
		echo "listener $PORT 127.0.0.1"
		echo "allow_anonymous true"
		echo "max_queued_messages 0"
		if [ "$1" = 1 ]; then
			echo "plugin $PLUGIN"
			echo "plugin_opt_events message.publish"
			echo "plugin_opt_stats_interval 1"
			echo "plugin_opt_kafka_brokers $BS"
			echo "plugin_opt_kafka_topic $2"
			echo "plugin_opt_kafka.reconnect.backoff.ms 10"
			echo "plugin_opt_kafka.reconnect.backoff.max.ms 50"
			echo "plugin_opt_queue_size 1048576"
			echo "plugin_opt_queue_bytes 1073741824"
		fi
	} >"$TMP/m.conf"
	mosquitto -c "$TMP/m.conf" >"$TMP/broker.log" 2>&1 &
	BROKER_PID=$!
	until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.05; done
}
stop_broker() {
	kill "$BROKER_PID"
	wait "$BROKER_PID" 2>/dev/null || true
	BROKER_PID=
}
sys_counter() { mosquitto_sub -p "$PORT" -t "\$SYS/broker/eventhook/kafka/$1" -C 1 -W 3 2>/dev/null || echo 0; }

watch_start() { # $1 topic, $2 count: starts the clock, returns once it is asking
	"$PEER" watch "$BS" "$1" 4 "$(($2 / 2))" "$2" 600 >"$TMP/watch.out" &
	WATCH=$!
	wait_line "$TMP/watch.out" watching
}

sink_round() { # $1 topic, $2 events (a multiple of CLIENTS); prints the drain rates: second half, whole
	mock "create $1 4"
	start_broker 1 "$1"
	mock "down 1"
	PUBS=
	for c in $(seq 1 $CLIENTS); do
		head -n "$(($2 / CLIENTS))" "$TMP/payloads" |
			mosquitto_pub -p "$PORT" -i "dev-$((c % 8))-$c" -t "site/$((c % 8))/dev-$c/telemetry" -q 0 -l &
		PUBS="$PUBS $!"
	done
	for p in $PUBS; do wait "$p"; done
	# Everything captured (the ring holds what librdkafka's queue could not).
	until [ "$(sys_counter enqueued)" -ge "$2" ]; do sleep 0.2; done
	watch_start "$1" "$2"
	C0=$(cpu_ticks "$BROKER_PID" nomain) M0=$(cpu_ticks "$MOCK_PID") T0=$(cpu_ticks "$BROKER_PID" comm:eh-kafka)
	B0=$(cpu_ticks "$BROKER_PID" comm:rdk:broker1)
	mock "up 1"
	wait "$WATCH"
	C1=$(cpu_ticks "$BROKER_PID" nomain) M1=$(cpu_ticks "$MOCK_PID") T1=$(cpu_ticks "$BROKER_PID" comm:eh-kafka)
	B1=$(cpu_ticks "$BROKER_PID" comm:rdk:broker1)
	stop_broker
	grep "kafka: stopped" "$TMP/broker.log" | sed 's/^[0-9]*: /   /' >&2
	echo "$(field rate "$TMP/watch.out") $(field whole "$TMP/watch.out") $(us_per "$C0" "$C1" "$2") $(us_per "$M0" "$M1" "$2")" \
		"$(us_per "$T0" "$T1" "$2") $(us_per "$B0" "$B1" "$2")"
}

lib_round() { # $1 topic; prints the drain rates: second half, whole
	mock "create $1 4"
	mock "down 1"
	# The replay waits for a line on stdin before it tears down, so that
	# its threads can still be read once the clock has seen all N.
	rm -f "$TMP/replay.in"
	mkfifo "$TMP/replay.in"
	# shellcheck disable=SC2086
	KAFKA_PEER_REPLAY_WAIT=1 "$PEER" replay "$BS" "$1" "$TMP/msgs" "$N" $BACKOFF <"$TMP/replay.in" \
		>"$TMP/replay.out" &
	REPLAY=$!
	exec 7>"$TMP/replay.in"
	echo go >&7
	wait_line "$TMP/replay.out" "^full"
	[ "$1" != lib1 ] || sed -n 's/^loaded \([0-9]*\), \(.*\)/   library input: \1 messages in the sink'"'"'s order, \2/p' \
		"$TMP/replay.out" >&2
	watch_start "$1" "$N"
	C0=$(cpu_ticks "$REPLAY") M0=$(cpu_ticks "$MOCK_PID") T0=$(cpu_ticks "$REPLAY" main)
	B0=$(cpu_ticks "$REPLAY" comm:rdk:broker1)
	mock "up 1"
	wait "$WATCH"
	C1=$(cpu_ticks "$REPLAY") M1=$(cpu_ticks "$MOCK_PID") T1=$(cpu_ticks "$REPLAY" main)
	B1=$(cpu_ticks "$REPLAY" comm:rdk:broker1)
	echo end >&7
	exec 7>&-
	wait "$REPLAY"
	echo "$(field rate "$TMP/watch.out") $(field whole "$TMP/watch.out") $(us_per "$C0" "$C1" "$N") $(us_per "$M0" "$M1" "$N")" \
		"$(us_per "$T0" "$T1" "$N") $(us_per "$B0" "$B1" "$N")"
}

libup_round() { # $1 topic; the library with the cluster up from the start, watched the same way
	mock "create $1 4"
	watch_start "$1" "$N"
	# shellcheck disable=SC2086
	"$PEER" replay "$BS" "$1" "$TMP/msgs" "$N" $BACKOFF </dev/null >"$TMP/replay.out"
	wait "$WATCH"
	echo "$(field rate "$TMP/watch.out") $(field rate "$TMP/replay.out")"
}

echo "== drain: $N events ($CLIENTS clients x $PER) captured while the cluster is down, then drained"
echo "   round 0: sink (its messages become the library's input)"
# The mock cluster reads long partitions back slowly: a sample of 200,000
# messages is enough for the library to cycle through.
N0=$((N < 200000 ? N : 200000 / CLIENTS * CLIENTS))
set -- $(sink_round sink0 "$N0")
echo "   sink drain $1 events/s (whole drain $2; $N0 events)"
T0=$(now); "$PEER" consume "$BS" sink0 "$N0" 300 >"$TMP/msgs" || { tail -2 "$TMP/msgs"; exit 1; }; echo "   read back in $(awk -v a="$T0" -v b="$(now)" "BEGIN { print b - a }") s"
echo "   $(tail -1 "$TMP/msgs") messages read back; the first: $(head -1 "$TMP/msgs" | cut -c1-600)"
for f in ratios sinks libs ratios_whole sinks_whole libs_whole ups ups_own ratios_up cpu_lib cpu_sink cpu_ratio \
	mock_lib mock_sink prod_lib prod_sink brk_lib brk_sink; do : >"$TMP/$f"; done
for r in $(seq 1 "$ROUNDS"); do
	set -- $(lib_round "lib$r")
	L=$1 LW=$2 CL=$3 ML=$4 PL=$5 KL=$6
	set -- $(libup_round "libup$r")
	U=$1
	echo "$1" >>"$TMP/ups"
	echo "$2" >>"$TMP/ups_own"
	set -- $(sink_round "sink$r" "$N")
	S=$1 SW=$2 CS=$3 MS=$4 PS=$5 KS=$6
	echo "$CL" >>"$TMP/cpu_lib"
	echo "$CS" >>"$TMP/cpu_sink"
	echo "$ML" >>"$TMP/mock_lib"
	echo "$PL" >>"$TMP/prod_lib"
	echo "$PS" >>"$TMP/prod_sink"
	echo "$KL" >>"$TMP/brk_lib"
	echo "$KS" >>"$TMP/brk_sink"
	echo "$MS" >>"$TMP/mock_sink"
	awk -v s="$CS" -v l="$CL" 'BEGIN { printf "%.3f\n", l / s }' >>"$TMP/cpu_ratio"
	awk -v s="$S" -v l="$U" 'BEGIN { printf "%.3f\n", s / l }' >>"$TMP/ratios_up"
	echo "$L" >>"$TMP/libs"
	echo "$LW" >>"$TMP/libs_whole"
	echo "$S" >>"$TMP/sinks"
	echo "$SW" >>"$TMP/sinks_whole"
	awk -v s="$S" -v l="$L" 'BEGIN { printf "%.3f\n", s / l }' >>"$TMP/ratios"
	awk -v s="$SW" -v l="$LW" 'BEGIN { printf "%.3f\n", s / l }' >>"$TMP/ratios_whole"
	echo "   round $r: second half: library $L msg/s, sink $S events/s, ratio $(tail -1 "$TMP/ratios");" \
		"whole drain: library $LW, sink $SW, ratio $(tail -1 "$TMP/ratios_whole");" \
		"library with the cluster up: $U, sink / that $(tail -1 "$TMP/ratios_up");" \
		"us CPU per message: library $CL (producing thread $PL, librdkafka's broker thread $KL; mock $ML)," \
		"sink $CS (producing thread $PS, librdkafka's broker thread $KS; mock $MS)," \
		"library / sink $(tail -1 "$TMP/cpu_ratio")"
done
# One client: every event has the same key, so one partition holds them
# all, and the mock cluster reads a long partition back slowly: fewer here.
M=$((N < 200000 ? N : 200000))
echo "== end to end and broker throughput: $M QoS 0 publishes from one mosquitto_pub"
mock "create e2e 4"
mock "create e2e2 4"
start_broker 1 e2e
T0=$(now)
seq -f "payload-%07g" "$M" | mosquitto_pub -p "$PORT" -t bench/x -q 0 -l
"$PEER" consume "$BS" e2e "$M" 300 count | tail -1 >"$TMP/consumed"
T1=$(now)
E2E=$(rate "$M" "$T0" "$T1")
stop_broker
publish_through() { # prints the seconds from the first publish until the subscriber has all N
	mosquitto_sub -p "$PORT" -t bench/# -C "$M" >/dev/null &
	SUB=$!
	sleep 0.3
	T0=$(now)
	seq -f "payload-%010g" "$M" | mosquitto_pub -p "$PORT" -t bench/x -q 0 -l
	wait "$SUB"
	T1=$(now)
	echo "$T0 $T1"
}
start_broker 0
set -- $(publish_through)
OFF=$(rate "$M" "$1" "$2")
stop_broker
start_broker 1 e2e2
set -- $(publish_through)
ON=$(rate "$M" "$1" "$2")
stop_broker

echo
echo "drain, second half (median of $ROUNDS):  library $(median <"$TMP/libs") msg/s, sink $(median <"$TMP/sinks") events/s"
echo "   sink / library, same round:         $(median <"$TMP/ratios")  (rounds: $(tr '\n' ' ' <"$TMP/ratios"))"
echo "drain, whole (median of $ROUNDS):        library $(median <"$TMP/libs_whole") msg/s, sink $(median <"$TMP/sinks_whole") events/s"
echo "   sink / library, same round:         $(median <"$TMP/ratios_whole")  (rounds: $(tr '\n' ' ' <"$TMP/ratios_whole"))"
echo "CPU per message over the drain, us (median of $ROUNDS): library process $(median <"$TMP/cpu_lib")," \
	"sink (broker process but its main thread) $(median <"$TMP/cpu_sink")"
echo "   library / sink, same round:         $(median <"$TMP/cpu_ratio")  (rounds: $(tr '\n' ' ' <"$TMP/cpu_ratio"))"
echo "   of which the producing thread:      library (main thread) $(median <"$TMP/prod_lib"), sink (eh-kafka)" \
	"$(median <"$TMP/prod_sink")"
echo "   and librdkafka's broker thread:     library $(median <"$TMP/brk_lib"), sink $(median <"$TMP/brk_sink")"
echo "   mock cluster per message:           library's drain $(median <"$TMP/mock_lib"), sink's $(median <"$TMP/mock_sink")"
echo "library, cluster up all along, second half (median): $(median <"$TMP/ups") msg/s (own clock, first produce to last report: $(median <"$TMP/ups_own"))"
echo "   sink drain / that, same round:      $(median <"$TMP/ratios_up")  (rounds: $(tr '\n' ' ' <"$TMP/ratios_up"))"
echo "end to end, one mosquitto_pub:          $E2E events/s (publisher-bound)"
echo "broker, plugin off:                     $OFF msg/s"
echo "broker, Kafka sink on:                  $ON msg/s  ($(awk -v a="$ON" -v b="$OFF" 'BEGIN { printf "%.2f", a / b }') x plugin off)"
echo "(nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg), librdkafka $(pkg-config --modversion rdkafka), N=$N, commit $(build_commit))"
