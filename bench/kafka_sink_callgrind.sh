#!/bin/sh
# Instructions per event on the Kafka sink thread (callgrind, exact): the
# broker with the plugin under callgrind --separate-threads, counters zeroed
# once it listens, 64 mosquitto_pub clients x PER publishes (the events of
# bench_kafka.sh), dumped once the sink reports every one delivered.
# usage: sh bench/kafka_sink_callgrind.sh [BUILD [PER]]   (BUILD: the build directory, default build)
set -eu
BUILD=${1:-${BUILD:-build}}
PER=${2:-500}
N=$((PER * 64))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=$ROOT/$BUILD/mosquitto_eventhook.so
PEER=$ROOT/$BUILD/test/kafka_peer
D=$(mktemp -d /tmp/eh-bench-kafka-cg.XXXXXX)
MOCK=; VG=
cleanup() { [ -n "$VG" ] && kill "$VG" 2>/dev/null; [ -n "$MOCK" ] && kill "$MOCK" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
mkfifo "$D/mock.in"
"$PEER" mock 1 <"$D/mock.in" >"$D/mock.out" 2>"$D/mock.err" &
MOCK=$!
exec 9>"$D/mock.in"
until grep -q bootstrap "$D/mock.out" 2>/dev/null; do sleep 0.05; done
BS=$(awk '/bootstrap/ { print $2 }' "$D/mock.out")
echo "create t 4" >&9
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
plugin_opt_queue_size 1048576
plugin_opt_queue_bytes 1073741824
CONF
awk -v n="$PER" 'BEGIN { for (i = 1; i <= n; i++)
	printf "{\"seq\":%d,\"temp\":%.1f,\"rh\":%d,\"bat\":%.2f,\"ok\":%s}\n", i, 18 + (i * 37 % 120) / 10,
		30 + i * 13 % 50, 3 + (i * 7 % 120) / 100, (i % 17) ? "true" : "false" }' >"$D/payloads"
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$D/cg" /usr/sbin/mosquitto -c "$D/m.conf" >"$D/vg.log" 2>&1 &
VG=$!
until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.2; done
sleep 2
callgrind_control -z "$VG" >/dev/null 2>&1
PUBS=
for c in $(seq 1 64); do
	mosquitto_pub -p "$PORT" -i "dev-$((c % 8))-$c" -t "site/$((c % 8))/dev-$c/telemetry" -q 0 -l <"$D/payloads" &
	PUBS="$PUBS $!"
done
for p in $PUBS; do wait "$p"; done
until [ "$(mosquitto_sub -p "$PORT" -t '$SYS/broker/eventhook/kafka/delivered' -C 1 -W 5 2>/dev/null || echo 0)" -ge "$N" ]; do sleep 1; done
callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
kill "$VG"; wait "$VG" || true; VG=
for f in "$D"/cg.1-*; do
	if grep -q "kafka_deliver" "$f"; then
		tot=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
		json=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null | awk '/eh_json_write_event/ { gsub(",", "", $1); print $1; exit }')
		echo "$BUILD: sink thread $(basename "$f"): $tot Ir for $N events = $((tot / N)) per event; eh_json_write_event inclusive $json = $((json / N)) per event ($(awk -v a="$json" -v b="$tot" 'BEGIN { printf "%.1f", 100 * a / b }') %)"
	fi
done
rm -rf "$D"
