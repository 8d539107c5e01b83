#!/bin/sh
# `make demo`: a real mosquitto with the plugin on a free local port, the file
# and local sinks on, a few clients doing what clients do, and the events
# printed as they arrive. Needs nothing outside this machine.
set -eu
plugin=$(readlink -f "${1:-build/mosquitto_eventhook.so}")
dir=$(mktemp -d /tmp/eventhook-demo.XXXXXX)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
broker_pid=""
sub_pid=""
cleanup() {
	[ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null || true
	[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	echo
	echo "demo files kept in $dir (broker.log, events.jsonl)"
}
trap cleanup EXIT INT TERM

mosquitto_passwd -b -c "$dir/passwd" alice wonderland >/dev/null 2>&1
cat > "$dir/mosquitto.conf" <<CONF
user $(id -un)
listener $port 127.0.0.1
allow_anonymous true
password_file $dir/passwd
log_dest file $dir/broker.log
plugin $plugin
plugin_opt_node_id demo
plugin_opt_events *
plugin_opt_file_path $dir/events.jsonl
plugin_opt_local_topic \$events/{event}/{clientid}
plugin_opt_stats_interval 5
CONF

echo "mosquitto with mosquitto-eventhook on 127.0.0.1:$port"
/usr/sbin/mosquitto -c "$dir/mosquitto.conf" &
broker_pid=$!
i=0
until mosquitto_pub -p "$port" -t demo/ready -n -i ready 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "broker did not start; log:"; cat "$dir/broker.log"; exit 1; }
	sleep 0.1
done

echo "events from \$events/# (the local sink), as they arrive:"
echo
mosquitto_sub -p "$port" -t '$events/#' -i demo-viewer -F '%t  %p' &
sub_pid=$!
sleep 0.5

step() { printf '\n--- %s\n' "$1"; sleep 0.3; }
step "alice logs in with the right password, subscribes, publishes, disconnects"
mosquitto_sub -p "$port" -i alice-sensor -u alice -P wonderland -t 'sensors/#' -C 1 -W 5 >/dev/null &
sleep 0.3
mosquitto_pub -p "$port" -i alice-pub -u alice -P wonderland -t sensors/temp -m 21.5 -q 1
wait %3 2>/dev/null || true
step "mallory tries a wrong password"
mosquitto_pub -p "$port" -i mallory -u alice -P guess -t sensors/temp -m 0 2>/dev/null || true
step "an anonymous MQTT 5 client publishes and leaves"
mosquitto_pub -p "$port" -i anon-v5 -V mqttv5 -t hello/world -m hi
sleep 1

echo
echo "--- the same events in $dir/events.jsonl (the file sink):"
cat "$dir/events.jsonl"
if [ -t 0 ]; then
	echo
	echo "broker still running on 127.0.0.1:$port; try: mosquitto_pub -p $port -t x -m y"
	echo "press Ctrl-C to stop"
	wait "$broker_pid"
fi
