"""MQTT sink, a stalled target: how soon after the target resumes do the
events captured during the stall arrive?

The source broker runs the plugin with the MQTT sink at its defaults (QoS 1,
window mqtt_max_inflight); a target mosquitto on loopback; a subscriber on
the target timestamps arrivals. STALLS times the target is stopped
(SIGSTOP) for 0.3 to 1.2 s (the same pseudo-random lengths every run) while
EVENTS message.publish events are captured; after SIGCONT the figure is the
time until the last of them reaches the subscriber. Reports, never fails on
a number (docs/performance-mqtt.md, "A slow target").

    python3 bench/bench_mqtt_stall.py [STALLS [EVENTS [WINDOW]]]   (30 400 256)
    EH_PLUGIN=path/to/mosquitto_eventhook.so selects the build (default BUILD).
"""
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("EH_PLUGIN", os.path.join(ROOT, os.environ.get("BUILD", "build"), "mosquitto_eventhook.so"))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
import test_mqtt as T  # noqa: E402  (its Mosq broker wrapper and helpers)
import paho.mqtt.client as mqtt  # noqa: E402

STALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 400
WINDOW = sys.argv[3] if len(sys.argv) > 3 else "256"


def main():
    rnd = random.Random(7)
    tmp = tempfile.mkdtemp(prefix="eh-bench-mqtt-stall-")
    os.chmod(tmp, 0o755)
    brokers = []
    try:
        target = T.Mosq(tmp, "target", ["max_queued_messages 0", "max_inflight_messages 0",
                                        "set_tcp_nodelay true"]).start()
        brokers.append(target)
        arrivals, lock = [], threading.Lock()
        sub = mqtt.Client(client_id="meter")
        subscribed = threading.Event()
        sub.on_connect = lambda c, u, f, rc: (c.subscribe("ev/#", 0), subscribed.set())

        def on_message(c, u, m):
            with lock:
                arrivals.append(time.monotonic())
        sub.on_message = on_message
        sub.connect("127.0.0.1", target.port)
        sub.loop_start()
        subscribed.wait(10)
        time.sleep(0.2)
        source = T.Mosq(tmp, "source", ["set_tcp_nodelay true"], plugin_opts=[
            ("node_id", "s"), ("events", "message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_max_inflight", WINDOW), ("shutdown_timeout_ms", "5000")]).start()
        brokers.append(source)
        pub = mqtt.Client(client_id="p")
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", source.port)
        pub.loop_start()
        for _ in range(50):
            info = pub.publish("w", b"x", qos=1)
        info.wait_for_publish()
        total = 50
        T.wait_until(lambda: len(arrivals) >= total, 30, "warm-up events")
        drains = []
        for _ in range(STALLS):
            stall = rnd.uniform(0.3, 1.2)
            target.proc.send_signal(signal.SIGSTOP)
            t_stop = time.monotonic()
            for _ in range(EVENTS):
                info = pub.publish("s", b"y" * 100, qos=1)
            info.wait_for_publish()
            total += EVENTS
            rest = stall - (time.monotonic() - t_stop)
            if rest > 0:
                time.sleep(rest)
            t0 = time.monotonic()
            target.proc.send_signal(signal.SIGCONT)
            T.wait_until(lambda: len(arrivals) >= total, 60, "the stalled events")
            with lock:
                drains.append((arrivals[total - 1] - t0) * 1000)
            time.sleep(0.2)
        pub.disconnect()
        pub.loop_stop()
        source.stop()
        stop_line = T.STOP_RE.search(source.log())
        ds = sorted(drains)
        print("MQTT sink, stalled target: %d stalls of 0.3-1.2 s, %d events captured per stall, window %s, "
              "load average %.2f" % (STALLS, EVENTS, WINDOW, os.getloadavg()[0]))
        print("SIGCONT to the last stalled event at the subscriber, ms: median %.1f  p90 %.1f  max %.1f  "
              "mean %.1f  over 100 ms: %d" % (statistics.median(ds), ds[int(len(ds) * 0.9)], ds[-1],
                                              statistics.mean(ds), sum(d > 100 for d in ds)))
        print("stop line: " + (stop_line.group(0) if stop_line else "none"))
    finally:
        for b in brokers:
            try:
                b.proc.send_signal(signal.SIGCONT)
            except Exception:
                pass
            b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
