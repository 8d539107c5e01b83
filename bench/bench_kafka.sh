#!/bin/sh
# Kafka sink benchmark (not a test): every figure is measured in the same run
# against the same librdkafka mock cluster (build/test/kafka_peer mock), so
# the ratios compare like with like.
#
#   1. librdkafka's own producer (kafka_peer produce, the sink's defaults:
#      idempotent, acks=all, lz4) sending N messages of the event's size:
#      the ceiling for any librdkafka-based sink on this machine.
#   2. The plugin: N MQTT publishes captured as message.publish events and
#      produced by the Kafka sink; events per second from the first publish
#      until a Kafka consumer has read all N (bounded by the publisher).
#      Then the sink's own rate: N events captured while the cluster is
#      down wait in the ring; from "cluster up" until the consumer has read
#      them all. The consumer reading N messages alone is timed too, so it
#      can be seen not to be the bottleneck.
#   3. Broker throughput: N QoS 0 publishes from mosquitto_pub to a
#      mosquitto_sub, with the plugin off and with the Kafka sink on.
#
#   sh bench/bench_kafka.sh [N]        (default N=200000; make first)
set -eu
N=${1:-200000}
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

mkfifo "$TMP/mock.in"
"$PEER" mock 1 raw:4 events:4 events-drain:4 <"$TMP/mock.in" >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
exec 9>"$TMP/mock.in"
while ! grep -q bootstrap "$TMP/mock.out" 2>/dev/null; do sleep 0.05; done
BS=$(awk '/bootstrap/ { print $2 }' "$TMP/mock.out")

# A message.publish event of a 16-byte payload is about 330 bytes of JSON.
echo "== 1. librdkafka producer alone: $N messages of 330 bytes"
OUT=$("$PEER" produce "$BS" raw "$N" 330)
RAW=$(echo "$OUT" | awk '{ print $2 }')
echo "   $OUT"

start_broker() { # $1: with plugin (1) or not (0)
	PORT=$(port)
	{
		echo "listener $PORT 127.0.0.1"
		echo "allow_anonymous true"
		echo "max_queued_messages 0"
		if [ "$1" = 1 ]; then
		# $2: topic suffix
			echo "plugin $PLUGIN"
			echo "plugin_opt_events message.publish"
			echo "plugin_opt_kafka_brokers $BS"
			echo "plugin_opt_kafka_topic events${2:-}"
			echo "plugin_opt_kafka.reconnect.backoff.ms 10"
			echo "plugin_opt_kafka.reconnect.backoff.max.ms 50"
			echo "plugin_opt_queue_size 1048576"
			echo "plugin_opt_queue_bytes 536870912"
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

publish_through() { # prints the seconds from the first publish until the subscriber has all N
	mosquitto_sub -p "$PORT" -t bench/# -C "$N" >/dev/null &
	SUB=$!
	sleep 0.3
	T0=$(now)
	seq -f "payload-%010g" "$N" | mosquitto_pub -p "$PORT" -t bench/x -q 0 -l
	wait "$SUB"
	T1=$(now)
	echo "$T0 $T1"
}

echo "== 2. plugin: $N publishes -> message.publish events -> Kafka sink -> consumer"
start_broker 1
T0=$(now)
seq -f "payload-%07g" "$N" | mosquitto_pub -p "$PORT" -t bench/x -q 0 -l
"$PEER" consume "$BS" events "$N" 300 count | tail -1 >"$TMP/consumed"
T1=$(now)
SINK=$(rate "$N" "$T0" "$T1")
echo "   $(cat "$TMP/consumed") events consumed; $SINK events/s end to end"
stop_broker
grep "kafka: stopped" "$TMP/broker.log" | sed 's/^[0-9]*: /   /'

T0=$(now)
"$PEER" consume "$BS" raw "$N" 300 count | tail -1 >/dev/null
T1=$(now)
CONSUMER=$(rate "$N" "$T0" "$T1")
echo "   consumer alone reads $CONSUMER msg/s"

start_broker 1 -drain
echo "down 1" >&9
seq -f "payload-%07g" "$N" | mosquitto_pub -p "$PORT" -t bench/x -q 0 -l
sleep 1
T0=$(now)
echo "up 1" >&9
"$PEER" consume "$BS" events-drain "$N" 300 count | tail -1 >"$TMP/consumed"
T1=$(now)
DRAIN=$(rate "$N" "$T0" "$T1")
echo "   backlog of $N drained at $DRAIN events/s ($(cat "$TMP/consumed"))"
stop_broker
grep "kafka: stopped" "$TMP/broker.log" | sed 's/^[0-9]*: /   /'

echo "== 3. broker throughput: $N QoS 0 publishes to one subscriber"
start_broker 0
set -- $(publish_through)
OFF=$(rate "$N" "$1" "$2")
stop_broker
start_broker 1
set -- $(publish_through)
ON=$(rate "$N" "$1" "$2")
stop_broker

echo
echo "librdkafka producer alone:        $RAW msg/s"
echo "plugin Kafka sink (end to end):   $SINK events/s  (publisher-bound; $(awk -v a="$SINK" -v b="$RAW" 'BEGIN { printf "%.2f", a / b }') x librdkafka alone)"
echo "plugin Kafka sink (backlog drain): $DRAIN events/s  ($(awk -v a="$DRAIN" -v b="$RAW" 'BEGIN { printf "%.2f", a / b }') x librdkafka alone; consumer alone $CONSUMER msg/s)"
echo "broker, plugin off:               $OFF msg/s"
echo "broker, Kafka sink on:            $ON msg/s  ($(awk -v a="$ON" -v b="$OFF" 'BEGIN { printf "%.2f", a / b }') x plugin off)"
echo "(nproc $(nproc), librdkafka $(pkg-config --modversion rdkafka), N=$N)"
