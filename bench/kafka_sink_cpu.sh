#!/bin/sh
# CPU time of the Kafka sink thread per event during a drain: bench_kafka.sh's
# scenario (N events from 64 clients captured while the mock cluster is down,
# then it comes back), but the figure is the sink thread's utime+stime
# (/proc/<pid>/task/<tid>/stat) over the drain divided by N, which other
# load on the machine disturbs far less than a rate.
# usage: sh bench/kafka_sink_cpu.sh [BUILD [PER]]   (BUILD: the build directory, default build)
set -eu
BUILD=${1:-${BUILD:-build}}
PER=${2:-15625}
N=$((PER * 64))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=$ROOT/$BUILD/mosquitto_eventhook.so
PEER=$ROOT/$BUILD/test/kafka_peer
D=$(mktemp -d /tmp/eh-bench-kafka-cpu.XXXXXX)
MOCK=; BR=
cleanup() { [ -n "$BR" ] && kill "$BR" 2>/dev/null; [ -n "$MOCK" ] && kill "$MOCK" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$D"; }
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
awk -v n="$PER" 'BEGIN { for (i = 1; i <= n; i++)
	printf "{\"seq\":%d,\"temp\":%.1f,\"rh\":%d,\"bat\":%.2f,\"ok\":%s}\n", i, 18 + (i * 37 % 120) / 10,
		30 + i * 13 % 50, 3 + (i * 7 % 120) / 100, (i % 17) ? "true" : "false" }' >"$D/payloads"
mosquitto -c "$D/m.conf" >"$D/broker.log" 2>&1 &
BR=$!
until mosquitto_sub -p "$PORT" -t probe -C 1 -W 1 -E >/dev/null 2>&1; do sleep 0.05; done
echo "down 1" >&9
PUBS=
for c in $(seq 1 64); do
	mosquitto_pub -p "$PORT" -i "dev-$((c % 8))-$c" -t "site/$((c % 8))/dev-$c/telemetry" -q 0 -l <"$D/payloads" &
	PUBS="$PUBS $!"
done
for p in $PUBS; do wait "$p"; done
sys() { mosquitto_sub -p "$PORT" -t "\$SYS/broker/eventhook/kafka/$1" -C 1 -W 3 2>/dev/null || echo 0; }
until [ "$(sys enqueued)" -ge "$N" ]; do sleep 0.2; done
sleep 1.5
# The sink thread is named eh-kafka (plugin/eh_runner.c).
TID=
for t in /proc/$BR/task/*; do
	[ "$(cat "$t/comm")" = eh-kafka ] && TID="$TID ${t##*/}"
done
cpu() { for t in $TID; do awk '{ print $14 + $15 }' "/proc/$BR/task/$t/stat"; done | awk '{ s += $1 } END { print s }'; }
set -- $TID
[ $# -eq 1 ] || { echo "expected one sink thread, found: $TID" >&2; exit 1; }
pcpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
C0=$(cpu); P0=$(pcpu "$BR"); M0=$(pcpu "$MOCK")
T0=$(date +%s.%N)
echo "up 1" >&9
until [ "$(sys delivered)" -ge "$N" ]; do sleep 0.1; done
C1=$(cpu); P1=$(pcpu "$BR"); M1=$(pcpu "$MOCK")
T1=$(date +%s.%N)
HZ=$(getconf CLK_TCK)
awk -v p0="$P0" -v p1="$P1" -v m0="$M0" -v m1="$M1" -v b="$BUILD" -v c0="$C0" -v c1="$C1" -v hz="$HZ" -v n="$N" -v t0="$T0" -v t1="$T1" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
	'BEGIN { printf "%s: us CPU per event: sink thread %.2f, broker process %.2f, mock cluster %.2f (drain wall %.2f s, load %s)\n", b, (c1 - c0) / hz / n * 1e6, (p1 - p0) / hz / n * 1e6, (m1 - m0) / hz / n * 1e6, t1 - t0, l }'
