#!/bin/sh
# The Kafka sink thread's own cost per event, and librdkafka's cost per
# message on the same messages, in ways far steadier on a shared machine than
# a rate (docs/performance-kafka.md):
#   callgrind  instructions per event (exact): the broker under callgrind
#              --separate-threads, counters zeroed once it listens, dumped
#              once the sink reports every event delivered; every thread of
#              the process by kind (bench/kafka_cg.py), the sink thread split
#              into our code and librdkafka's calls, and the JSON writer's
#              share of the sink thread.
#   replay     the same for librdkafka alone: the sink first produces the
#              events (not profiled) and they are read back from the
#              cluster; then kafka_peer replay produces exactly those
#              messages, with the sink's configuration, under callgrind,
#              zeroed after loading them and dumped after its flush. Same
#              scenario as callgrind: the cluster is up all along.
#   cpu        CPU time per event: bench_kafka.sh's drain (events captured
#              while the mock cluster is down, then it comes back), the sink
#              thread's (eh-kafka) utime+stime over the drain divided by N.
# Events: 64 mosquitto_pub clients x PER publishes, the clients, topics and
# payloads of bench_kafka.sh; librdkafka's mock cluster (test/kafka_peer).
# EH_CG_KEEP=DIR keeps the callgrind files and thread names there.
# EH_KAFKA_OPTS="KEY VALUE;KEY VALUE" adds plugin_opt_KEY VALUE lines to the
# broker's configuration (kafka_format cloudevents, kafka.linger.ms 50).
# EH_CG_SCENARIO=drain (callgrind and replay): instead of the cluster being up
# all along, it goes down after start-up, all N messages are produced (or
# wait in the ring once librdkafka's queue is full), and then it comes back:
# bench_kafka.sh's drain, where the sink, like the replay, produces as fast
# as librdkafka takes messages rather than as fast as clients publish
# (with PER 3125, N = 200,000 is twice librdkafka's queue).
# usage: sh bench/kafka_sink_thread.sh callgrind|replay|cpu [BUILD [PER]]
#        (BUILD: the build directory, default build; PER: 500 / 15625)
set -eu
MODE=${1:-}
case "$MODE" in
callgrind|replay) PER=${3:-500} ;;
cpu) PER=${3:-15625} ;;
*) echo "usage: sh bench/kafka_sink_thread.sh callgrind|replay|cpu [BUILD [PER]]" >&2; exit 2 ;;
esac
BUILD=${2:-${BUILD:-build}}
N=$((PER * 64))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=$ROOT/$BUILD/mosquitto_eventhook.so
PEER=$ROOT/$BUILD/test/kafka_peer
D=$(mktemp -d /tmp/eh-bench-kafka-thread.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
MOCK=; BR=; RP=
cleanup() {
	[ -n "$BR" ] && kill "$BR" 2>/dev/null
	[ -n "$RP" ] && kill "$RP" 2>/dev/null
	[ -n "$MOCK" ] && kill "$MOCK" 2>/dev/null
	wait 2>/dev/null || true
	rm -rf "$D"
}
trap cleanup EXIT
mkfifo "$D/mock.in"
"$PEER" mock 1 <"$D/mock.in" >"$D/mock.out" 2>"$D/mock.err" &
MOCK=$!
exec 9>"$D/mock.in"
until grep -q bootstrap "$D/mock.out" 2>/dev/null; do sleep 0.05; done
BS=$(awk '/bootstrap/ { print $2 }' "$D/mock.out")
echo "create t 4" >&9
echo "create r 4" >&9
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$D/m.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 0
plugin $PLUGIN
plugin_opt_events message.publish
plugin_opt_stats_interval 1
plugin_opt_kafka_brokers $BS
plugin_opt_kafka_topic t
plugin_opt_kafka.reconnect.backoff.ms 10
plugin_opt_kafka.reconnect.backoff.max.ms 50
plugin_opt_queue_size 1048576
plugin_opt_queue_bytes 1073741824
CONF
echo "${EH_KAFKA_OPTS:-}" | tr ';' '\n' | sed -n 's/^ *\([^ ].*\)/plugin_opt_\1/p' >>"$D/m.conf"
awk -v n="$PER" 'BEGIN { for (i = 1; i <= n; i++)
	printf "{\"seq\":%d,\"temp\":%.1f,\"rh\":%d,\"bat\":%.2f,\"ok\":%s}\n", i, 18 + (i * 37 % 120) / 10,
		30 + i * 13 % 50, 3 + (i * 7 % 120) / 100, (i % 17) ? "true" : "false" }' >"$D/payloads"
sys() { mosquitto_sub -p "$PORT" -t "\$SYS/broker/eventhook/kafka/$1" -C 1 -W 5 2>/dev/null || echo 0; }
publish() {
	PUBS=
	for c in $(seq 1 64); do
		mosquitto_pub -p "$PORT" -i "dev-$((c % 8))-$c" -t "site/$((c % 8))/dev-$c/telemetry" -q 0 -l <"$D/payloads" &
		PUBS="$PUBS $!"
	done
	for p in $PUBS; do wait "$p"; done
}

# "tid comm" of every thread of process $1, in tid order (bench/kafka_cg.py).
tasks() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(cat "$t/comm")"; done | sort -n; }
SCENARIO=${EH_CG_SCENARIO:-up}
keep() { [ -z "${EH_CG_KEEP:-}" ] || { mkdir -p "$EH_CG_KEEP" && cp "$D"/cg.1-* "$D/tasks" "$EH_CG_KEEP"/; }; }

if [ "$MODE" = callgrind ]; then
	valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --callgrind-out-file="$D/cg" /usr/sbin/mosquitto -c "$D/m.conf" \
		>"$D/vg.log" 2>&1 &
	BR=$!
	until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.2; done
	sleep 2
	[ "$SCENARIO" = drain ] && echo "down 1" >&9
	callgrind_control -z "$BR" >/dev/null 2>&1
	publish
	if [ "$SCENARIO" = drain ]; then
		until [ "$(sys enqueued)" -ge "$N" ]; do sleep 1; done
		echo "up 1" >&9
	fi
	until [ "$(sys delivered)" -ge "$N" ]; do sleep 1; done
	tasks "$BR" >"$D/tasks"
	callgrind_control -d "$BR" >/dev/null 2>&1
	sleep 1
	kill "$BR"; wait "$BR" || true; BR=
	keep
	for f in "$D"/cg.1-*; do
		grep -q "kafka_deliver" "$f" || continue
		tot=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
		json=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null | awk '/eh_json_write_event/ { gsub(",", "", $1); print $1; exit }')
		echo "$BUILD: sink thread: $tot Ir for $N events = $((tot / N)) per event; eh_json_write_event inclusive $json = $((json / N)) per event ($(awk -v a="$json" -v b="$tot" 'BEGIN { printf "%.1f", 100 * a / b }') %)"
	done
	/usr/bin/python3 "$HERE/kafka_cg.py" "$BUILD: sink, broker process, cluster $SCENARIO" "$N" "$D/tasks" "$D"/cg.1-*
	exit 0
fi

if [ "$MODE" = replay ]; then
	# The sink's messages, produced the ordinary way and read back.
	/usr/sbin/mosquitto -c "$D/m.conf" >"$D/broker.log" 2>&1 &
	BR=$!
	until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.05; done
	publish
	until [ "$(sys delivered)" -ge "$N" ]; do sleep 0.2; done
	kill "$BR"; wait "$BR" || true; BR=
	"$PEER" consume "$BS" t "$N" 300 >"$D/msgs"
	mkfifo "$D/go"
	KAFKA_PEER_REPLAY_WAIT=1 valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --callgrind-out-file="$D/cg" \
		"$PEER" replay "$BS" r "$D/msgs" "$N" reconnect.backoff.ms=10 reconnect.backoff.max.ms=50 \
		<"$D/go" >"$D/replay.out" 2>"$D/vg.log" &
	RP=$!
	exec 8>"$D/go"
	until grep -q '^loaded' "$D/replay.out" 2>/dev/null; do sleep 0.2; done
	# As for the sink: the producer has been up for a while when counting starts.
	sleep 2
	[ "$SCENARIO" = drain ] && echo "down 1" >&9
	callgrind_control -z "$RP" >/dev/null 2>&1
	echo go >&8
	if [ "$SCENARIO" = drain ]; then
		# As the sink's ring: what librdkafka's queue cannot take waits.
		until grep -q '^full' "$D/replay.out" 2>/dev/null || grep -q '^rate' "$D/replay.out"; do sleep 0.2; done
		echo "up 1" >&9
	fi
	until grep -q '^rate' "$D/replay.out" 2>/dev/null; do sleep 0.2; done
	tasks "$RP" >"$D/tasks"
	callgrind_control -d "$RP" >/dev/null 2>&1
	echo end >&8
	wait "$RP" || { cat "$D/replay.out" "$D/vg.log" >&2; exit 1; }
	RP=
	keep
	echo "$BUILD: replay: $(grep '^rate' "$D/replay.out")"
	/usr/bin/python3 "$HERE/kafka_cg.py" "$BUILD: librdkafka alone (kafka_peer replay), cluster $SCENARIO" "$N" "$D/tasks" "$D"/cg.1-*
	exit 0
fi

/usr/sbin/mosquitto -c "$D/m.conf" >"$D/broker.log" 2>&1 &
BR=$!
until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.05; done
echo "down 1" >&9
publish
until [ "$(sys enqueued)" -ge "$N" ]; do sleep 0.2; done
sleep 1.5
# The sink thread is named eh-kafka (plugin/eh_runner.c).
TID=
for t in /proc/$BR/task/*; do
	[ "$(cat "$t/comm")" = eh-kafka ] && TID="$TID ${t##*/}"
done
set -- $TID
[ $# -eq 1 ] || { echo "expected one eh-kafka thread, found:$TID" >&2; exit 1; }
TID=$1
ticks() { awk '{ print $14 + $15 }' "$1"; }
C0=$(ticks "/proc/$BR/task/$TID/stat"); P0=$(ticks "/proc/$BR/stat"); M0=$(ticks "/proc/$MOCK/stat")
T0=$(date +%s.%N)
echo "up 1" >&9
until [ "$(sys delivered)" -ge "$N" ]; do sleep 0.1; done
C1=$(ticks "/proc/$BR/task/$TID/stat"); P1=$(ticks "/proc/$BR/stat"); M1=$(ticks "/proc/$MOCK/stat")
T1=$(date +%s.%N)
awk -v p0="$P0" -v p1="$P1" -v m0="$M0" -v m1="$M1" -v b="$BUILD" -v c0="$C0" -v c1="$C1" -v hz="$(getconf CLK_TCK)" \
	-v n="$N" -v t0="$T0" -v t1="$T1" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
	'BEGIN { printf "%s: us CPU per event: sink thread %.2f, broker process %.2f, mock cluster %.2f (drain wall %.2f s, load %s)\n", b, (c1 - c0) / hz / n * 1e6, (p1 - p0) / hz / n * 1e6, (m1 - m0) / hz / n * 1e6, t1 - t0, l }'
