#!/usr/bin/python3
"""Soak run: the real broker with all five sinks on against local peers,
under steady client churn, for SOAK_SECONDS (default 3600). Not part of
make check or CI; run it with `make soak` (SOAK_SECONDS=600 make soak for
ten minutes).

Peers: the file sink's file, the local sink into the broker itself, an HTTP
server (http_peer.HttpPeer), librdkafka's mock cluster (build/test/
kafka_peer) and a plugin-free mosquitto as the MQTT sink's target.

Churn: SOAK_RATE sessions per second (default 10), alternately MQTT 3.1.1
and 5: connect, subscribe, publish at QoS 0 and 1, receive both, disconnect
(6 events per session with message.publish on). A SIGHUP every
SOAK_HUP_SECONDS (default 300).

Every SOAK_REPORT_SECONDS (default 60) one line: elapsed time, the broker's
resident memory (VmRSS) and the counters the plugin publishes under
$SYS/broker/eventhook/<sink>/, plus what each peer received.

At the end: a sentinel, a clean stop, and the checks: the broker never
died, every session was accepted, for every sink enqueued = delivered +
failed + left with failed, dropped and left all 0, each peer holds exactly
what its sink counted delivered (at least, for the QoS 1 MQTT target), the
event file's seq has no gap, and RSS grew by less than SOAK_RSS_MIB
(default 32) from the first report to the last. Exit status 0 when all hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

import paho.mqtt.client as mqtt  # noqa: E402

from eh_harness import (MQTTV5, MQTTV311, TIMEOUT, Broker, RawClient,  # noqa: E402
                        wait_until)
from eh_rel import AllPeers, stopped_counters, vm_rss_kib  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "3600"))
RATE = float(os.environ.get("SOAK_RATE", "10"))
REPORT = float(os.environ.get("SOAK_REPORT_SECONDS", "60"))
HUP = float(os.environ.get("SOAK_HUP_SECONDS", "300"))
RSS_MIB = float(os.environ.get("SOAK_RSS_MIB", "32"))
SINKS = ("file", "local", "http", "kafka", "mqtt")


class Counter:
    """A paho subscriber that only counts what it receives (and keeps the
    last value of each topic, for the $SYS counters)."""

    def __init__(self, port, filters, client_id):
        self.n = 0
        self.last = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(client_id=client_id)
        self.c.on_message = self.on_message
        self.c.connect("127.0.0.1", port, 60)
        for f in filters:
            self.c.subscribe(f, 1)
        self.c.loop_start()

    def on_message(self, client, userdata, msg):
        with self.lock:
            if msg.topic.startswith("$SYS/"):
                self.last[msg.topic] = msg.payload.decode()
            else:
                self.n += 1

    def stat(self, sink, name):
        with self.lock:
            return self.last.get(f"$SYS/broker/eventhook/{sink}/{name}", "-")

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def session(port, n):
    proto = MQTTV5 if n % 2 else MQTTV311
    c = RawClient(port, f"soak-{n}", proto)
    try:
        if c.connect().rc != 0:
            return False
        c.subscribe([(f"soak/{n}/#", 1)])
        c.publish(f"soak/{n}/a", b"zero", qos=0)
        c.publish(f"soak/{n}/b", b"one", qos=1)
        c.wait_messages(2)
        c.disconnect()
        return True
    finally:
        c.close()


def kafka_count(peers, minimum):
    peer = os.path.join(os.path.dirname(os.environ.get("EH_PLUGIN", "build/x")), "test", "kafka_peer")
    # Reading back is slow at the soak's trickle (see main): allow 1,000
    # events per second.
    timeout = max(TIMEOUT * 3, minimum / 1000)
    out = subprocess.run([peer, "consume", peers.kafka.bootstrap, "mqtt-events", str(minimum),
                          str(int(timeout)), "count"], capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1:] or [""]
    if last[0].startswith("end "):
        return int(last[0].split()[1])
    print(f"soak: kafka consumer failed (exit {out.returncode}): {last[0]!r} {out.stderr[-2000:]!r}", flush=True)
    return -1


def file_check(path):
    """(events, seq gaps) of the event file, read as a stream."""
    n, gaps, expect = 0, 0, 1
    with open(path, "rb") as f:
        for line in f:
            seq = json.loads(line)["seq"]
            if seq != expect:
                gaps += 1
            expect = seq + 1
            n += 1
    return n, gaps


def main():
    # The mock cluster reads a partition back at a cost that grows with its
    # length, and at the soak's trickle every message set holds an event or
    # a few: 215,000 of them in 4 partitions did not read back in 215 s,
    # in 64 partitions they took 62 s. So: about 4,000 events a partition.
    partitions = min(256, max(4, int(SECONDS * RATE * 6 / 4000) + 1))
    peers = AllPeers(kafka_partitions=partitions)
    try:
        return run(peers)
    finally:
        peers.close()


def run(peers):
    opts = peers.options(events="client.*,message.publish", node="soak")
    # queue_bytes 1 MiB: rings (and the local outbox) become resident as
    # they are first written, which with the default 32 MiB per sink
    # could take this churn many minutes and look like growth. The peers
    # keep up, so 1 MiB (thousands of events) never fills.
    opts.update({"topics": "soak/#", "stats_interval": "10", "mqtt_qos": "1",
                 "shutdown_timeout_ms": "10000", "queue_bytes": str(1 << 20)})
    # Subscribed before the broker starts: it sees every event the sink sends.
    target_sub = Counter(peers.target.port, ["eventhook/#"], "soak-target-sub")
    broker = Broker(["allow_anonymous true", "max_queued_messages 100000"], plugin_opts=opts,
                    name="soak")
    failures = []
    watcher = Counter(broker.port, ["$SYS/broker/eventhook/#", "$events/#"], "soak-watcher")
    start = time.monotonic()
    next_report, next_hup = start + REPORT, start + HUP
    sessions = refused = hups = 0
    rss_first = rss_max = None
    rss = vm_rss_kib(broker.proc.pid)
    print(f"soak: {SECONDS:g} s, {RATE:g} sessions/s, all sinks; broker pid {broker.proc.pid}, "
          f"dir {broker.dir}", flush=True)
    print("minute  rss_kib  " + "  ".join(f"{s}:enq/dlv/fail/drop/queued" for s in SINKS)
          + "  http_rx mqtt_rx local_rx", flush=True)
    try:
        while time.monotonic() - start < SECONDS:
            t0 = time.monotonic()
            if not session(broker.port, sessions):
                refused += 1
            sessions += 1
            if not broker.alive():
                failures.append("the broker died")
                break
            now = time.monotonic()
            if now >= next_hup:
                broker.sighup()
                hups += 1
                next_hup += HUP
            if now >= next_report:
                next_report += REPORT
                rss = vm_rss_kib(broker.proc.pid)
                rss_first = rss if rss_first is None else rss_first
                rss_max = max(rss_max or 0, rss)
                cols = ["/".join(watcher.stat(s, k) for k in ("enqueued", "delivered", "failed",
                                                              "dropped", "queued")) for s in SINKS]
                print(f"{(now - start) / 60:6.1f}  {rss:7d}  " + "  ".join(cols)
                      + f"  {peers.forget_http()} {target_sub.n} {watcher.n}", flush=True)
            delay = 1.0 / RATE - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
        if broker.alive():
            rss = vm_rss_kib(broker.proc.pid)
            session(broker.port, sessions)
            # Let the sinks catch up before the stop (the stop drains too).
            wait_until(lambda: all(watcher.stat(s, "queued") == "0" for s in SINKS), TIMEOUT * 3,
                       message="queues empty")
    finally:
        watcher.stop()
        rc = broker.stop(120)
    counts = stopped_counters(broker.log())
    print(f"soak: {sessions} sessions ({refused} refused), {hups} SIGHUPs, exit status {rc}")
    print(f"soak: RSS first report {rss_first} KiB, last {rss} KiB, max {rss_max} KiB")
    for s in SINKS:
        print(f"soak: {s}: {counts.get(s)}")
    if rc != 0:
        failures.append(f"broker exit status {rc}")
    if refused:
        failures.append(f"{refused} sessions refused")
    for s in SINKS:
        c = counts.get(s)
        if not c:
            failures.append(f"{s}: no shutdown counters")
            continue
        if c["enqueued"] != c["delivered"] + c["failed"] + c["left"]:
            failures.append(f"{s}: counters do not add up: {c}")
        if c["failed"] or c["dropped"] or c["left"]:
            failures.append(f"{s}: failed/dropped/left not 0: {c}")
    n, gaps = file_check(broker.path("events.jsonl"))
    print(f"soak: event file: {n} events, {gaps} seq gaps")
    if gaps or n != counts.get("file", {}).get("delivered"):
        failures.append(f"file: {n} events, {gaps} gaps")
    http_rx = peers.forget_http()
    wait_until(lambda: target_sub.n >= counts.get("mqtt", {}).get("delivered", 0), TIMEOUT,
               message="target subscriber") if counts.get("mqtt") else None
    if counts.get("http") and http_rx != counts["http"]["delivered"]:
        failures.append(f"http: peer got {http_rx} events, sink delivered {counts['http']['delivered']}")
    print(f"soak: http received {http_rx} events; mqtt target subscriber {target_sub.n} messages")
    if counts.get("kafka"):
        k = kafka_count(peers, counts["kafka"]["delivered"])
        print(f"soak: kafka consumer read {k} messages")
        if k != counts["kafka"]["delivered"]:
            failures.append(f"kafka: consumer read {k}, sink delivered {counts['kafka']['delivered']}")
    if counts.get("mqtt") and target_sub.n < counts["mqtt"]["delivered"]:
        failures.append(f"mqtt: target subscriber got {target_sub.n} < {counts['mqtt']['delivered']}")
    if rss_first is not None and rss - rss_first > RSS_MIB * 1024:
        failures.append(f"RSS grew by {(rss - rss_first) / 1024:.1f} MiB (bound {RSS_MIB:g} MiB)")
    target_sub.stop()
    if failures:
        print("soak: FAILED:\n  " + "\n  ".join(failures))
        print(f"soak: broker dir kept: {broker.dir}")
        return 1
    broker.cleanup()
    print("soak: PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
