#!/bin/sh
# MQTT sink throughput: events/s delivered to a target broker by the sink,
# next to a plain paho client's publish rate to the same target in the same
# run (the baseline), and the source broker's intake with the sink on versus
# the plugin off. Not a test: prints figures and ratios.
#   sh bench/bench_mqtt.sh [messages]     (default 20000)
set -e
N=${1:-20000}
PLUGIN=${EH_PLUGIN:-$(pwd)/build/mosquitto_eventhook.so}
exec /usr/bin/python3 - "$N" "$PLUGIN" <<'PY'
import os, socket, subprocess, sys, tempfile, threading, time
import paho.mqtt.client as mqtt
N, PLUGIN = int(sys.argv[1]), sys.argv[2]
tmp = tempfile.mkdtemp(prefix="eh-bench-mqtt-"); os.chmod(tmp, 0o755)
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
procs = []
def broker(name, lines):
    p = port(); path = os.path.join(tmp, name + ".conf")
    with open(path, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\n" % p + "\n".join(lines) + "\n")
    pr = subprocess.Popen(["/usr/sbin/mosquitto", "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(pr)
    for _ in range(500):
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return p, pr
        except OSError: time.sleep(0.01)
    raise SystemExit("broker did not start")
def counter(p, topic):
    n = [0]; done = threading.Event()
    c = mqtt.Client(); c.connect("127.0.0.1", p)
    def on(c, u, m):
        n[0] += 1
    c.on_message = on; c.subscribe(topic, 1); c.loop_start(); time.sleep(0.3)
    return c, n
def publish(p, count, qos):
    c = mqtt.Client(client_id="bench-pub"); c.connect("127.0.0.1", p); c.loop_start()
    t = time.monotonic()
    for i in range(count):
        info = c.publish("load/%d" % (i % 100), b"x" * 64, qos=qos)
    info.wait_for_publish()
    dt = time.monotonic() - t; c.disconnect(); c.loop_stop(); return dt
def wait_count(n, want, timeout=120):
    end = time.monotonic() + timeout
    while n[0] < want and time.monotonic() < end: time.sleep(0.01)
try:
    tport, _ = broker("target", [])
    # Baseline: a plain paho client publishing straight to the target.
    sub, n = counter(tport, "load/#")
    t0 = time.monotonic(); publish(tport, N, 1); wait_count(n, N); base = N / (time.monotonic() - t0)
    sub.loop_stop(); sub.disconnect()
    # The sink: events of a client publishing to the source broker.
    sport, _ = broker("source", ["plugin " + PLUGIN, "plugin_opt_events message.publish",
                                  "plugin_opt_mqtt_uri tcp://127.0.0.1:%d" % tport, "plugin_opt_mqtt_qos 1",
                                  "plugin_opt_queue_size 1048576"])
    sub, n = counter(tport, "eventhook/#")
    t0 = time.monotonic(); intake_on = N / publish(sport, N, 1); wait_count(n, N)
    sink = N / (time.monotonic() - t0)
    sub.loop_stop(); sub.disconnect()
    off, _ = broker("off", [])
    intake_off = N / publish(off, N, 1)
    print("mqtt sink: %d events, QoS 1, 64-byte payloads, %d cores" % (N, os.cpu_count()))
    print("  plain paho client -> target        %9.0f msg/s (baseline)" % base)
    print("  sink events delivered to target    %9.0f ev/s  (%.2fx baseline)" % (sink, sink / base))
    print("  source intake, plugin off          %9.0f msg/s" % intake_off)
    print("  source intake, mqtt sink on        %9.0f msg/s (%.2fx plugin off)" % (intake_on, intake_on / intake_off))
finally:
    for pr in procs: pr.terminate(); pr.wait()
PY
