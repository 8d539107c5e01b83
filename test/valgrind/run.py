#!/usr/bin/python3
"""The real broker with the plugin under valgrind memcheck, through a full
scenario: all five sinks on against local peers (file; local; HTTP against
http_peer.HttpPeer, with a retried 500 and a dropped 400 on the way; Kafka
against librdkafka's mock cluster in build/test/kafka_peer; MQTT against a
second, plugin-free mosquitto), clients of both protocol versions that
connect, subscribe, publish, are refused and disconnect, a SIGHUP reload,
more clients, and a clean shutdown.

Passes when valgrind reports no error (invalid reads or writes, use of
uninitialised values, bad frees, ...), no definite or indirect leak, and no
leak with a frame of mosquitto_eventhook.so anywhere in its stack. Leaks
entirely inside the broker or its libraries are suppressed by
test/valgrind/mosquitto.supp (each with the reason); nothing there names our
plugin, and this script refuses a suppression file that does.

    make check-valgrind      (EH_VALGRIND_KEEP=1 keeps the broker's directory)
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from eh_harness import (MQTTV5, MQTTV311, Broker, RawClient, read_events,  # noqa: E402
                        wait_until, write_password_file)
from eh_rel import AllPeers, stopped_counters  # noqa: E402
from http_peer import Reply  # noqa: E402

SUPP = HERE / "mosquitto.supp"
SLOW = 300.0  # valgrind makes everything 20-50x slower: generous deadlines
PLUGIN_SO = "mosquitto_eventhook.so"
# A frame of ours: the .so without debug info, or one of our source files.
OURS = re.compile(r"mosquitto_eventhook\.so|\(eh_\w+\.c:\d+\)")


class ValgrindBroker(Broker):
    def command(self):
        return ["valgrind", "--tool=memcheck", "--leak-check=full",
                "--show-leak-kinds=definite,indirect,possible", "--errors-for-leak-kinds=definite,indirect",
                "--track-origins=yes", "--keep-debuginfo=yes", "--num-callers=50",
                f"--suppressions={SUPP}", "--gen-suppressions=all",
                f"--log-file={self.dir / 'valgrind.log'}"] + super().command()


def clients(port, prefix):
    """Sessions of both protocol versions: accepted, refused, publishing,
    subscribing, one dropped without DISCONNECT."""
    for i, proto in enumerate((MQTTV311, MQTTV5)):
        c = RawClient(port, f"{prefix}-{i}", proto, timeout=SLOW)
        assert c.connect(username="dev", password="dev-pw").rc == 0
        c.subscribe([(f"v/{prefix}/#", 1)])
        c.publish(f"v/{prefix}/a", b"x" * 100, qos=1)
        c.publish(f"v/{prefix}/b", b"y", qos=0)
        c.wait_messages(2)
        c.unsubscribe([f"v/{prefix}/#"])
        c.disconnect()
    bad = RawClient(port, f"{prefix}-bad", MQTTV5, timeout=SLOW)
    assert bad.connect(username="dev", password="wrong").rc not in (0, None)
    bad.close()
    gone = RawClient(port, f"{prefix}-gone", MQTTV311, timeout=SLOW)
    assert gone.connect(username="dev", password="dev-pw").rc == 0
    gone.close()


def main():
    peers = AllPeers()
    try:
        return run(peers)
    finally:
        peers.close()


def run(peers):
    failures = []
    peers.http.script(Reply(500), Reply(400))
    tmp = Path(peers.target.dir)
    pw = write_password_file(tmp / "vg.pw", {"dev": "dev-pw"})
    opts = peers.options(events="*", node="valgrind")
    opts.update({"stats_interval": "1", "shutdown_timeout_ms": "20000", "http_batch_max": "1",
                 "mqtt_presence_topic": "presence/{clientid}"})
    b = ValgrindBroker(["allow_anonymous false", f"password_file {pw}"], plugin_opts=opts,
                       name="valgrind", start=False)
    started = time.monotonic()
    try:
        b.start(timeout=SLOW)
        clients(b.port, "one")
        b.sighup(timeout=SLOW)
        clients(b.port, "two")
        sentinel = RawClient(b.port, "sentinel", timeout=SLOW)
        assert sentinel.connect(username="dev", password="dev-pw").rc == 0
        sentinel.disconnect()
        wait_until(lambda: any(e["clientid"] == "sentinel" and e["event"] == "client.disconnected"
                               for e in read_events(b.path("events.jsonl"))), SLOW,
                   message="the sentinel in the event file")
        wait_until(lambda: any(e.get("clientid") == "sentinel" for e in peers.http.delivered_events()),
                   SLOW, message="the sentinel over HTTP")
    finally:
        rc = b.stop(SLOW)
    elapsed = time.monotonic() - started
    log = b.log()
    counts = stopped_counters(log)
    vg = (b.dir / "valgrind.log").read_text(errors="replace")
    print(f"valgrind: scenario ran {elapsed:.0f} s; broker exit status {rc}")
    for s, c in sorted(counts.items()):
        print(f"valgrind: {s}: {c}")
    if rc != 0:
        failures.append(f"broker exit status {rc}")
    if sorted(counts) != ["file", "http", "kafka", "local", "mqtt"]:
        failures.append(f"shutdown counters of {sorted(counts)}")
    for s, c in counts.items():
        if c["enqueued"] != c["delivered"] + c["failed"] + c["left"]:
            failures.append(f"{s}: counters do not add up: {c}")
    m = re.search(r"ERROR SUMMARY: (\d+) errors", vg)
    if not m:
        failures.append("no ERROR SUMMARY in valgrind.log")
    elif int(m.group(1)):
        failures.append(f"valgrind: {m.group(1)} error(s)")
    # Any unsuppressed record (error or leak of any kind) that involves our
    # plugin fails, "possibly lost" included.
    for block in re.split(r"\n==\d+== \n", vg):
        if OURS.search(block) and ("are possibly lost" in block or "Invalid" in block
                                   or "uninitialised" in block or "definitely" in block
                                   or "indirectly" in block):
            failures.append("a record involving the plugin:\n" + block)
    summary = re.search(r"LEAK SUMMARY:.*?suppressed: [^\n]*", vg, re.S)
    print("valgrind: " + (summary.group(0) if summary else "no leak summary"))
    rules = re.sub(r"#[^\n]*", "", SUPP.read_text())
    if PLUGIN_SO in rules or re.search(r"\beh_|\bkafka_|\bhttp_|\bmqtt_|\blocal_|\bfile_", rules):
        failures.append("the suppression file names the plugin")
    if failures:
        print("valgrind: FAILED\n  " + "\n  ".join(failures))
        print(f"valgrind: log kept in {b.dir}")
        return 1
    print("valgrind: PASSED (no errors, no leaks in the plugin)")
    if not os.environ.get("EH_VALGRIND_KEEP"):
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
