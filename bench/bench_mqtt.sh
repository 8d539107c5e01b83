#!/bin/sh
# MQTT sink throughput next to paho.mqtt.c's own rate against the same target
# broker in the same run. Not a test: prints figures and ratios.
#
#   baseline  build/bench/mqtt_baseline (bench/mqtt_baseline.c): the library
#             the sink uses (MQTTAsync), publishing N messages of the event's
#             size to the event's topic, QoS 1, MQTT 3.1.1, the sink's default
#             window (256) in flight.
#   sink      N message.publish events captured by a source broker while the
#             target refuses the sink's login; then the target lets it in
#             (password file, SIGHUP) and the sink drains its queue.
#   Both are timed the same way: a C subscriber (QoS 0) on the target counts
#   the messages and reports (N-1) / (last arrival - first arrival).
#   Rounds alternate the order; medians. Each also reports its CPU time per
#   message: the baseline process's, and the source broker's during the
#   drain (the sink thread and paho's threads; nothing else runs there then).
#   Then the source broker's intake (Python QoS 1 publisher) with the plugin
#   off and with the sink on.
#
#   sh bench/bench_mqtt.sh [N [ROUNDS]]    (defaults 20000, 3; make first)
#   MQTT_WINDOW=W  messages in flight for both (the sink's mqtt_max_inflight;
#                  default 256, the sink's default)
set -e
N=${1:-20000}
ROUNDS=${2:-3}
export MQTT_WINDOW=${MQTT_WINDOW:-256}
case $MQTT_WINDOW in
''|*[!0-9]*|0|0*) MQTT_WINDOW=bad ;;
esac
[ "$MQTT_WINDOW" != bad ] && [ "${#MQTT_WINDOW}" -le 5 ] && [ "$MQTT_WINDOW" -le 65535 ] ||
	{ echo "MQTT_WINDOW must be a whole number from 1 to 65535" >&2; exit 2; }
BUILD=${BUILD:-build}
PLUGIN=${EH_PLUGIN:-$(pwd)/$BUILD/mosquitto_eventhook.so}
BASE=$(pwd)/$BUILD/bench/mqtt_baseline
[ -x "$BASE" ] && [ -f "$PLUGIN" ] || { echo "run make $BUILD/bench/mqtt_baseline first" >&2; exit 2; }
EH_BENCH_DIR=$(cd "$(dirname "$0")" && pwd) exec /usr/bin/python3 - "$N" "$ROUNDS" "$PLUGIN" "$BASE" <<'PY'
import os, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
import paho.mqtt.client as mqtt
N, ROUNDS, PLUGIN, BASE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
WINDOW = int(os.environ["MQTT_WINDOW"])
sys.path.insert(0, os.environ["EH_BENCH_DIR"])
from benchlib import cpu_seconds
def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
tmp = tempfile.mkdtemp(prefix="eh-bench-mqtt-"); os.chmod(tmp, 0o777)  # the brokers run as the mosquitto user
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
procs = []
def broker(name, lines, listen=None):
    p = listen or port(); path = os.path.join(tmp, name + ".conf")
    with open(path, "w") as f:
        f.write("\n".join(lines).replace("{port}", str(p)) + "\n")
    pr = subprocess.Popen(["/usr/sbin/mosquitto", "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(pr)
    for _ in range(500):
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return p, pr
        except OSError: time.sleep(0.01)
    raise SystemExit("broker %s did not start" % name)
def stop(pr):
    pr.terminate(); pr.wait(); procs.remove(pr)
def common():
    return ["allow_anonymous true", "max_inflight_messages 0", "max_queued_messages 0", "set_tcp_nodelay true"]
pwfile = os.path.join(tmp, "passwd")
def sink_login(allowed):
    # The sink's login exists only while it may drain.
    open(pwfile, "w").close(); os.chmod(pwfile, 0o644)
    if allowed:
        subprocess.run(["mosquitto_passwd", "-b", pwfile, "sink", "sinkpass"], check=True)
    os.chmod(pwfile, 0o644)
sink_login(False)
with open(os.path.join(tmp, "sink.pass"), "w") as f: f.write("sinkpass\n")
os.chmod(os.path.join(tmp, "sink.pass"), 0o644)
# Target: one anonymous listener for the subscriber and the baseline, one with
# a password file for the sink; same broker process.
sinkport = port()
tport, target = broker("target", ["per_listener_settings true", "listener {port} 127.0.0.1", "allow_anonymous true",
                                   "listener %d 127.0.0.1" % sinkport, "allow_anonymous false",
                                   "password_file " + pwfile, "max_inflight_messages 0", "max_queued_messages 0",
                                   "set_tcp_nodelay true"])
def sub_start(count):
    s = subprocess.Popen([BASE, "sub", "tcp://127.0.0.1:%d" % tport, "eventhook/#", str(count)],
                         stdout=subprocess.PIPE, text=True)
    if s.stdout.readline().strip() != "ready": raise SystemExit("subscriber did not start")
    return s
def sub_result(s, timeout=180):
    try: out, _ = s.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        s.kill(); s.communicate(); return None
    f = out.split()
    return {"rate": float(f[5]), "topic": f[7], "bytes": int(f[9])}
def publish(p, count, qos=1):
    c = mqtt.Client(client_id="bench-pub"); c.connect("127.0.0.1", p); c.loop_start()
    t = time.monotonic()
    for i in range(count):
        info = c.publish("load/%d" % (i % 100), b"x" * 64, qos=qos)
    info.wait_for_publish()
    dt = time.monotonic() - t; c.disconnect(); c.loop_stop(); return dt
def source(extra=()):
    log = os.path.join(tmp, "source.log")
    lines = ["listener {port} 127.0.0.1"] + common() + ["log_dest file " + log, "plugin " + PLUGIN,
        "plugin_opt_events message.publish", "plugin_opt_mqtt_uri tcp://127.0.0.1:%d" % sinkport,
        "plugin_opt_mqtt_username sink", "plugin_opt_mqtt_password_file " + os.path.join(tmp, "sink.pass"),
        "plugin_opt_mqtt_qos 1", "plugin_opt_mqtt_reconnect_max 1", "plugin_opt_queue_size 1048576",
        "plugin_opt_mqtt_max_inflight %d" % WINDOW] + list(extra)
    if os.path.exists(log): os.unlink(log)
    return broker("source", lines) + (log,)
def sink_round():
    sink_login(False); target.send_signal(signal.SIGHUP); time.sleep(0.2)
    sport, spr, log = source()
    publish(sport, N)          # captured and queued: the sink cannot log in
    s = sub_start(N)
    cpu0 = cpu_seconds(spr.pid)
    sink_login(True); target.send_signal(signal.SIGHUP)
    r = sub_result(s)
    if r is not None:
        r["cpu_us"] = 1e6 * (cpu_seconds(spr.pid) - cpu0) / N
    stop(spr)
    stopline = [l for l in open(log) if "mqtt: stopped" in l]
    return r, (stopline[-1].split("stopped; ")[-1].strip() if stopline else "no stop line")
shape = None
def base_round():
    s = sub_start(N)
    cpu0 = children_cpu()
    out = subprocess.run([BASE, "pub", "tcp://127.0.0.1:%d" % tport, shape["topic"], str(shape["bytes"]), str(N),
                          str(WINDOW)], capture_output=True, text=True, check=True).stdout.split()
    cpu_us = 1e6 * (children_cpu() - cpu0) / N
    r = sub_result(s)
    if r is None:
        return None
    r["until_puback"] = float(out[9])
    r["cpu_us"] = cpu_us
    return r
base, sink, ratios, base_cpu, sink_cpu = [], [], [], [], []
try:
    for i in range(ROUNDS):
        order = ["sink", "base"] if i % 2 == 0 else ["base", "sink"]
        got = {}
        for what in order:
            if what == "sink":
                r, line = sink_round()
                if r is None: raise SystemExit("the subscriber never received %d events (sink: %s)" % (N, line))
                shape = shape or r
                got["sink"] = r["rate"]
                sink_cpu.append(r["cpu_us"])
                print("  round %d sink      %9.0f ev/s  %5.1f us CPU/event (%s)" % (i + 1, r["rate"], r["cpu_us"], line))
            else:
                r = base_round()
                if r is None: raise SystemExit("the subscriber never received the baseline's %d messages" % N)
                got["base"] = r["rate"]
                base_cpu.append(r["cpu_us"])
                print("  round %d baseline  %9.0f msg/s %5.1f us CPU/msg   (until the last PUBACK: %.0f msg/s)"
                      % (i + 1, r["rate"], r["cpu_us"], r["until_puback"]))
        base.append(got["base"]); sink.append(got["sink"]); ratios.append(got["sink"] / got["base"])
    # Intake of the source broker (Python publisher, QoS 1), sink delivering.
    sink_login(True); target.send_signal(signal.SIGHUP)
    sport, spr, _ = source()
    intake_on = N / publish(sport, N)
    stop(spr)
    off, offpr = broker("off", ["listener {port} 127.0.0.1"] + common())
    intake_off = N / publish(off, N)
    print("mqtt sink: %d events of %d bytes to %s, QoS 1, window %d, %d rounds, %d cores, load %.2f"
          % (N, shape["bytes"], shape["topic"], WINDOW, ROUNDS, os.cpu_count(), os.getloadavg()[0]))
    print("  paho.mqtt.c MQTTAsync publisher   %9.0f msg/s (baseline, median), %.1f us CPU per message"
          % (statistics.median(base), statistics.median(base_cpu)))
    print("  sink draining its queue           %9.0f ev/s  (median), %.1f us CPU per event"
          % (statistics.median(sink), statistics.median(sink_cpu)))
    print("  sink / baseline, same round       %9.2f       (median; rounds: %s)"
          % (statistics.median(ratios), " ".join("%.2f" % r for r in ratios)))
    print("  source intake, plugin off         %9.0f msg/s" % intake_off)
    print("  source intake, mqtt sink on       %9.0f msg/s (%.2fx plugin off)" % (intake_on, intake_on / intake_off))
finally:
    for pr in list(procs): pr.terminate(); pr.wait()
    shutil.rmtree(tmp, ignore_errors=True)
PY
