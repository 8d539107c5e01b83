"""MQTT sink against a second, plugin-free mosquitto (the target) and a real
paho subscriber on it.

Scenarios: exact topics, payloads, QoS and MQTT 5 user properties; retained
presence seen by a late subscriber; CloudEvents in both bindings; target
down at start; target SIGKILLed mid-stream and restarted (nothing lost,
order kept after removing QoS 1 duplicates by id); a target that stops
acknowledging (SIGSTOP) while events keep coming, and at shutdown; TLS with a CA made here
(mutual TLS, and a wrong CA refused); the sink pointed at its own broker
(its connection produces no events, nothing amplifies); MQTT 5 refusals
counted failed and their log rate-limited; events whose topic would be over
65535 bytes or over the target's max_packet_size (MQTT 5 and 3.1.1)
counted failed while later ones go through;
options refused at start; the shutdown counters add up.

Self-contained (standard library + Debian's python3-paho-mqtt 1.6.1), so it
does not depend on the shared harness; waits poll against generous
deadlines, and "nothing more" is proven with a sentinel client.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

TIMEOUT = float(os.environ.get("EH_TIMEOUT", "20"))
HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.environ.get("EH_PLUGIN", os.path.join(HERE, "..", "..", "build", "mosquitto_eventhook.so"))
MOSQUITTO = os.environ.get("EH_MOSQUITTO", "/usr/sbin/mosquitto")


def wait_until(pred, timeout=TIMEOUT, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Mosq:
    """One mosquitto process in its own directory; restartable on its port."""

    def __init__(self, tmp, name, lines, port=None, plugin_opts=None):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        # The broker drops root for the mosquitto user: it must reach the
        # directory (persistence writes there).
        os.chmod(self.dir, 0o777)
        self.port = port or free_port()
        self.lines = list(lines)
        self.plugin_opts = plugin_opts
        self.proc = None
        self.logs = []

    def conf(self):
        out = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true", "log_type all"]
        out += [l.replace("{dir}", self.dir) for l in self.lines]
        if self.plugin_opts is not None:
            out.append("plugin " + os.path.abspath(PLUGIN))
            out += ["plugin_opt_%s %s" % kv for kv in self.plugin_opts]
        return "\n".join(out) + "\n"

    def write_conf(self):
        path = os.path.join(self.dir, "mosquitto.conf")
        # surrogateescape: a test can put bytes that are not UTF-8 in an option.
        with open(path, "wb") as f:
            f.write(self.conf().encode("utf-8", "surrogateescape"))
        return path

    def start(self):
        path = self.write_conf()
        self.log_path = os.path.join(self.dir, "log%d.txt" % len(self.logs))
        self.logs.append(self.log_path)
        env = dict(os.environ)
        if os.environ.get("EH_BROKER_PRELOAD"):
            env["LD_PRELOAD"] = os.environ["EH_BROKER_PRELOAD"]
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", path], stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.dir)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_until(up, what="broker on port %d" % self.port)
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        out = ""
        for p in self.logs:
            with open(p, errors="replace") as f:
                out += f.read()
        return out


class Sub:
    """A paho subscriber on the target recording every message."""

    def __init__(self, port, topics=("#",), v5=False, client_id="", clean=True, tls=None):
        self.msgs = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        if v5:
            self.c = mqtt.Client(client_id=client_id, protocol=proto)
        else:
            self.c = mqtt.Client(client_id=client_id, clean_session=clean, protocol=proto)
        self.topics = topics
        self.v5 = v5
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.reconnect_delay_set(1, 1)
        if v5:
            self.c.connect("127.0.0.1", port, clean_start=clean)
        else:
            self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_until(self.subscribed.is_set, what="subscription")

    def _on_connect(self, c, userdata, flags, rc, props=None):
        for t in self.topics:
            c.subscribe(t, qos=2)
        self.subscribed.set()

    def _on_message(self, c, userdata, m):
        props = {}
        if self.v5 and getattr(m, "properties", None) is not None:
            p = m.properties
            props["user"] = list(getattr(p, "UserProperty", []) or [])
            props["content_type"] = getattr(p, "ContentType", None)
        with self.lock:
            self.msgs.append((m.topic, m.payload, m.qos, bool(m.retain), props))

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def events(self):
        out = []
        for t, p, q, r, props in self.snapshot():
            if t.startswith("eventhook/") or t.startswith("ev/"):
                out.append(json.loads(p))
        return out

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def client_session(port, cid, publish=()):
    """Connects cid to port, publishes (topic, payload) at QoS 1, disconnects."""
    c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    # The CONNACK: the broker has seen this session before the next
    # client's, so events come in the order the sessions were made.
    wait_until(c.is_connected, what=cid[:40] + " connected")
    for topic, payload in publish:
        c.publish(topic, payload, qos=1).wait_for_publish()
    c.disconnect()
    c.loop_stop()


STOP_RE = re.compile(r"eventhook: mqtt: stopped; enqueued (\d+), delivered (\d+), failed (\d+), "
                     r"dropped (\d+), left undelivered at shutdown (\d+)")


class MqttSinkTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="eh-mqtt-")
        os.chmod(self.tmp, 0o755)
        self.brokers = []
        self.subs = []

    def tearDown(self):
        for s in self.subs:
            try:
                s.close()
            except Exception:
                pass
        for b in self.brokers:
            b.stop()
        failed = any(e for _, e in (getattr(self._outcome, "errors", None) or []) if e) or \
            (hasattr(self._outcome, "result") and not self._outcome.result.wasSuccessful())
        if failed:
            for b in self.brokers:
                sys.stderr.write("---- %s\n%s" % (b.dir, b.conf()))
                sys.stderr.write("\n".join(b.log().splitlines()[-150:]) + "\n")
        if not os.environ.get("EH_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def broker(self, name, lines=(), port=None, plugin_opts=None, start=True):
        b = Mosq(self.tmp, name, lines, port, plugin_opts)
        self.brokers.append(b)
        return b.start() if start else b

    def sub(self, *a, **kw):
        s = Sub(*a, **kw)
        self.subs.append(s)
        return s

    def stop_counts(self, b):
        b.stop()
        m = STOP_RE.search(b.log())
        self.assertIsNotNone(m, "no stop line")
        return tuple(int(x) for x in m.groups())

    # ---- exact messages, MQTT 5 properties, presence ----

    def test_v5_topics_payloads_properties_presence(self):
        target = self.broker("target")
        sub = self.sub(target.port, v5=True)
        main = self.broker("main", plugin_opts=[
            ("node_id", "n1"), ("events", "client.connected,client.disconnected,message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_protocol", "5"),
            ("mqtt_qos", "1"), ("mqtt_presence_topic", "presence/{clientid}"),
            ("shutdown_timeout_ms", "3000")])
        client_session(main.port, "alice", [("a/b", b"hello")])
        client_session(main.port, "bob/x")  # stays online below via a second session
        bob = mqtt.Client(client_id="carol", protocol=mqtt.MQTTv311)
        bob.connect("127.0.0.1", main.port)
        bob.loop_start()
        wait_until(bob.is_connected, what="carol connected")
        client_session(main.port, "sentinel")
        # The sentinel's offline presence document is the last message the
        # sink publishes for it (after its event): wait for that one.
        wait_until(lambda: sum(1 for m in sub.snapshot() if m[0] == "presence/sentinel") == 2,
                   what="sentinel's presence documents")
        msgs = sub.snapshot()
        ev_msgs = [m for m in msgs if m[0].startswith("eventhook/")]
        topics = [m[0] for m in ev_msgs]
        self.assertEqual(topics, [
            "eventhook/n1/client.connected/alice", "eventhook/n1/message.publish/alice",
            "eventhook/n1/client.disconnected/alice",
            "eventhook/n1/client.connected/bob%2Fx", "eventhook/n1/client.disconnected/bob%2Fx",
            "eventhook/n1/client.connected/carol",
            "eventhook/n1/client.connected/sentinel", "eventhook/n1/client.disconnected/sentinel"])
        pub = json.loads(ev_msgs[1][1])
        self.assertEqual((pub["event"], pub["clientid"], pub["topic"], pub["node"]),
                         ("message.publish", "alice", "a/b", "n1"))
        # The payload encoding is the core's (docs/events.md): text or base64.
        self.assertIn(pub["payload"], ("hello", base64.b64encode(b"hello").decode()))
        for t, p, qos, retain, props in ev_msgs:
            e = json.loads(p)
            self.assertEqual(qos, 1)
            self.assertFalse(retain)
            self.assertEqual(props["content_type"], "application/json")
            self.assertEqual(props["user"], [("event", e["event"]), ("node", "n1"), ("id", e["id"])])
        self.assertEqual([m[0] for m in msgs if m[0].startswith("presence/")],
                         ["presence/alice", "presence/alice", "presence/bob%2Fx", "presence/bob%2Fx",
                          "presence/carol", "presence/sentinel", "presence/sentinel"])
        # A late subscriber learns who is online from the retained documents.
        late = self.sub(target.port, topics=("presence/#",))
        wait_until(lambda: len(late.snapshot()) == 4, what="retained presence")
        state = {json.loads(p)["clientid"]: json.loads(p)["status"] for t, p, q, r, _ in late.snapshot()}
        self.assertEqual(state, {"alice": "offline", "bob/x": "offline", "carol": "online",
                                 "sentinel": "offline"})
        self.assertTrue(all(r for _, _, _, r, _ in late.snapshot()))
        bob.loop_stop()
        bob.disconnect()
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((fail, drop, left), (0, 0, 0))
        self.assertEqual(enq, dlv)
        self.assertGreaterEqual(enq, 9)  # carol's disconnected is the ninth

    def test_cloudevents_bindings(self):
        target = self.broker("target")
        sub5 = self.sub(target.port, topics=("v5/#",), v5=True)
        sub3 = self.sub(target.port, topics=("v3/#",))
        common = [("node_id", "n2"), ("events", "client.connected"), ("mqtt_format", "cloudevents"),
                  ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port)]
        m5 = self.broker("m5", plugin_opts=common + [("mqtt_protocol", "5"), ("mqtt_topic", "v5/{event}"),
                                                     ("mqtt_client_id", "sink5")])
        m3 = self.broker("m3", plugin_opts=common + [("mqtt_topic", "v3/{event}"), ("mqtt_client_id", "sink3")])
        client_session(m5.port, "dev5")
        client_session(m3.port, "dev3")
        wait_until(lambda: sub5.snapshot() and sub3.snapshot(), what="cloudevents")
        t, p, q, r, props = sub5.snapshot()[0]
        data = json.loads(p)
        self.assertEqual(data["clientid"], "dev5")
        self.assertEqual(props["content_type"], "application/json")
        self.assertEqual(dict(props["user"]), {"specversion": "1.0", "type": "client.connected", "source": "n2",
                                               "id": data["id"], "time": data["ts"]})
        t, p, q, r, props = sub3.snapshot()[0]
        ce = json.loads(p)
        self.assertEqual((ce["specversion"], ce["type"], ce["source"], ce["datacontenttype"]),
                         ("1.0", "client.connected", "n2", "application/json"))
        self.assertEqual(ce["data"]["clientid"], "dev3")
        self.assertEqual(ce["id"], ce["data"]["id"])

    def test_burst_beyond_paho_buffer_in_order_once(self):
        # A burst hands paho far more than its default 100 buffered
        # messages at once (window 300, presence: up to 600): every event
        # arrives exactly once, in order, each presence document right after
        # its event, and the counters are exact.
        target = self.broker("target", ["max_queued_messages 0", "max_inflight_messages 0"])
        sub = self.sub(target.port, topics=("ev/#", "pres/#"))
        main = self.broker("main", plugin_opts=[
            ("node_id", "n6"), ("events", "client.connected,client.disconnected,message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_presence_topic", "pres/{clientid}"), ("mqtt_max_inflight", "300"),
            ("shutdown_timeout_ms", "5000")])
        total = 2000
        pub = mqtt.Client(client_id="burst", protocol=mqtt.MQTTv311)
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", main.port)
        pub.loop_start()
        for i in range(total):
            info = pub.publish("b/%d" % i, str(i), qos=1)
        info.wait_for_publish()
        pub.disconnect()
        pub.loop_stop()
        client_session(main.port, "sentinel")
        wait_until(lambda: sum(1 for m in sub.snapshot() if m[0] == "pres/sentinel") == 2,
                   timeout=TIMEOUT * 2, what="sentinel's presence documents")
        msgs = sub.snapshot()
        evs = [json.loads(p) for t, p, _, _, _ in msgs if t.startswith("ev/")]
        n = total + 4
        self.assertEqual([e["seq"] for e in evs], list(range(1, n + 1)))
        for i, (t, p, _, _, _) in enumerate(msgs):
            if t.startswith("pres/"):
                doc, before = json.loads(p), json.loads(msgs[i - 1][1])
                self.assertEqual(doc["event_id"], before["id"], "presence not right after its event")
        self.assertEqual([json.loads(p)["status"] for t, p, _, _, _ in msgs if t == "pres/burst"],
                         ["online", "offline"])
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, dlv, fail, drop, left), (n, n, 0, 0, 0))

    # ---- outages ----

    def test_target_down_at_start_then_killed_mid_stream(self):
        tport = free_port()
        tlines = ["persistence true", "persistence_location {dir}/", "autosave_interval 1",
                  "max_queued_messages 0", "max_inflight_messages 0"]
        target = self.broker("target", tlines, port=tport)
        # A persistent subscriber session exists before the sink ever
        # connects, so nothing the sink publishes can precede it.
        pre = Sub(tport, topics=("ev/#",), client_id="collector", clean=False)
        pre.close()
        target.stop()
        main = self.broker("main", plugin_opts=[
            ("node_id", "n3"), ("events", "client.connected,client.disconnected,message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % tport), ("mqtt_qos", "1"), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_reconnect_min", "1"), ("mqtt_reconnect_max", "1"), ("shutdown_timeout_ms", "5000")])
        wait_until(lambda: "mqtt: cannot connect to" in main.log(), what="connect failure logged")
        for i in range(5):
            client_session(main.port, "early%d" % i)
        target.start()
        sub = self.sub(tport, topics=("ev/#",), client_id="collector", clean=False)
        wait_until(lambda: len(sub.events()) >= 10, what="events queued while the target was down")
        t_seen = time.time()
        # The target saves its sessions (the sink's too) every second.
        db = os.path.join(target.dir, "mosquitto.db")
        wait_until(lambda: os.path.exists(db) and os.stat(db).st_mtime > t_seen + 0.05, what="target saved")
        pub = mqtt.Client(client_id="streamer", protocol=mqtt.MQTTv311)
        pub.connect("127.0.0.1", main.port)
        pub.loop_start()
        total = 1500
        killed = threading.Event()

        def killer():
            wait_until(lambda: sum(1 for e in sub.events() if e["event"] == "message.publish") >= 200,
                       what="stream under way")
            target.kill()
            killed.set()
        th = threading.Thread(target=killer)
        th.start()
        for i in range(total):
            pub.publish("s/%d" % i, str(i), qos=0)
            if i % 50 == 0:
                time.sleep(0.005)
        th.join()
        self.assertTrue(killed.is_set())
        target.start()
        pub.disconnect()
        pub.loop_stop()
        client_session(main.port, "sentinel")
        wait_until(lambda: any(e["clientid"] == "sentinel" and e["event"] == "client.disconnected"
                               for e in sub.events()), timeout=TIMEOUT * 2, what="sentinel after restart")
        seen, order = set(), []
        for e in sub.events():
            if e["id"] not in seen:
                seen.add(e["id"])
                order.append(e)
        seqs = [e["seq"] for e in order]
        self.assertEqual(seqs, sorted(seqs), "out of order after dedupe")
        n = max(seqs)
        # A SIGKILLed mosquitto loses what it had acknowledged but not yet
        # forwarded: that is the target's loss, not the sink's. Its log
        # (flushed per line) shows every PUBLISH it received from the sink.
        got = set(int(x) for x in re.findall(r"Received PUBLISH from eventhook-n3 \(d\d, q1, r0, m\d+, "
                                             r"'ev/(\d+)'", target.log()))
        self.assertEqual(set(range(1, n + 1)) - (set(seqs) | got), set(), "never reached the target")
        # early x5 and sentinel: connected + disconnected; streamer too.
        self.assertEqual(n, 2 * 5 + 2 + total + 2)
        self.assertIn("mqtt: connection to tcp://127.0.0.1:%d lost" % tport, main.log())
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, fail, drop, left), (n, 0, 0, 0))
        self.assertEqual(dlv, enq)

    # ---- a target that acknowledges late ----

    @contextlib.contextmanager
    def stalled(self, target):
        """The target process is stopped (SIGSTOP) inside, so it reads and
        acknowledges nothing; continued on the way out whatever happens."""
        target.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            target.proc.send_signal(signal.SIGCONT)

    def test_window_full_while_target_stalled_in_order_once(self):
        # A window of 4 and a target that stops acknowledging for 300 ms at
        # a time, three times, with 30 events captured during each stall:
        # the window stays full far longer than one wait of the sink's. A
        # SIGHUP of the source broker lands in one stall. Every event still
        # arrives exactly once, in capture order (so in order per client),
        # and the counters say so.
        target = self.broker("target", ["max_queued_messages 0"])
        sub = self.sub(target.port, topics=("ev/#",))
        main = self.broker("main", plugin_opts=[
            ("node_id", "n7"), ("events", "client.connected,client.disconnected,message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_qos", "1"), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_max_inflight", "4"), ("shutdown_timeout_ms", "5000")])
        pubs = {}
        for cid in ("pa", "pb"):
            c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
            c.connect("127.0.0.1", main.port)
            c.loop_start()
            wait_until(c.is_connected, what=cid + " connected")
            pubs[cid] = c
        rounds, per_round = 3, 15
        for r in range(rounds):
            with self.stalled(target):
                for j in range(per_round):
                    for cid, c in pubs.items():
                        # Acknowledged by the source broker: captured.
                        c.publish("t/" + cid, "%d" % (r * per_round + j), qos=1).wait_for_publish()
                if r == 1:
                    main.proc.send_signal(signal.SIGHUP)
                time.sleep(0.3)
        for c in pubs.values():
            c.disconnect()
            c.loop_stop()
        client_session(main.port, "sentinel")
        wait_until(lambda: any(e["clientid"] == "sentinel" and e["event"] == "client.disconnected"
                               for e in sub.events()), timeout=TIMEOUT * 2, what="sentinel")
        evs = sub.events()
        n = 2 * (2 + rounds * per_round) + 2
        self.assertEqual(len({e["id"] for e in evs}), len(evs), "an event arrived twice")
        self.assertEqual([e["seq"] for e in evs], list(range(1, n + 1)))
        for cid in pubs:
            mine = [e for e in evs if e["clientid"] == cid]
            self.assertEqual([e["event"] for e in mine],
                             ["client.connected"] + ["message.publish"] * (rounds * per_round)
                             + ["client.disconnected"])
            got = [e["payload"] for e in mine if e["event"] == "message.publish"]
            want = [str(i) for i in range(rounds * per_round)]
            # Text or base64, as the core encodes it (docs/events.md).
            self.assertIn(got, (want, [base64.b64encode(w.encode()).decode() for w in want]))
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, dlv, fail, drop, left), (n, n, 0, 0, 0))

    def test_target_stalled_at_shutdown_counts_add_up(self):
        # The broker stops while the target acknowledges nothing and the
        # window is full: the sink waits for room until the drain deadline,
        # then stops, and what never got acknowledged is counted left, not
        # lost from the counters.
        target = self.broker("target", ["max_queued_messages 0"])
        sub = self.sub(target.port, topics=("ev/#",))
        main = self.broker("main", plugin_opts=[
            ("node_id", "n8"), ("events", "message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_qos", "1"), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_max_inflight", "4"), ("shutdown_timeout_ms", "500")])
        client_session(main.port, "before", [("t/b", b"%d" % i) for i in range(5)])
        wait_until(lambda: len(sub.events()) == 5, what="events before the stall")
        with self.stalled(target):
            client_session(main.port, "during", [("t/d", b"%d" % i) for i in range(30)])
            enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, fail, drop), (35, 0, 0))
        self.assertEqual(dlv + left, enq)
        # Nothing captured during the stall can have been acknowledged.
        self.assertGreaterEqual(left, 30)

    # ---- TLS ----

    def make_pki(self):
        d = os.path.join(self.tmp, "pki")
        os.makedirs(d)
        os.chmod(d, 0o755)

        def run(*args):
            subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)
        for ca in ("ca", "otherca"):
            run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key", "-out", ca + ".crt",
                "-days", "2", "-subj", "/CN=eventhook test " + ca)
        with open(os.path.join(d, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        for name, cn in (("server", "localhost"), ("client", "eventhook-client")):
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn)
            run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".crt", "-days", "2", "-extfile", "san.ext")
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        return d

    def test_tls_mutual_and_wrong_ca(self):
        pki = self.make_pki()
        tls_port = free_port()
        target = self.broker("target", [
            "listener %d 127.0.0.1" % tls_port, "cafile %s/ca.crt" % pki, "certfile %s/server.crt" % pki,
            "keyfile %s/server.key" % pki, "require_certificate true"])
        sub = self.sub(target.port)
        good = self.broker("good", plugin_opts=[
            ("node_id", "tls"), ("events", "client.connected"),
            ("mqtt_uri", "ssl://127.0.0.1:%d" % tls_port), ("mqtt_ca_file", pki + "/ca.crt"),
            ("mqtt_cert_file", pki + "/client.crt"), ("mqtt_key_file", pki + "/client.key")])
        bad = self.broker("bad", plugin_opts=[
            ("node_id", "tlsbad"), ("events", "client.connected"), ("shutdown_timeout_ms", "200"),
            ("mqtt_uri", "ssl://127.0.0.1:%d" % tls_port), ("mqtt_ca_file", pki + "/otherca.crt"),
            ("mqtt_cert_file", pki + "/client.crt"), ("mqtt_key_file", pki + "/client.key")])
        client_session(good.port, "secure")
        client_session(bad.port, "refused")
        wait_until(lambda: sub.events(), what="event over mTLS")
        self.assertEqual([(e["node"], e["clientid"]) for e in sub.events()], [("tls", "secure")])
        wait_until(lambda: "mqtt: cannot connect to ssl://" in bad.log(), what="wrong CA refused")
        client_session(good.port, "sentinel")
        wait_until(lambda: len(sub.events()) == 2, what="sentinel")
        self.assertEqual([e["clientid"] for e in sub.events()], ["secure", "sentinel"])
        enq, dlv, fail, drop, left = self.stop_counts(bad)
        self.assertEqual((enq, dlv, left), (1, 0, 1))

    # ---- what the target cannot take ----

    def test_topic_over_65535_bytes_counted_failed(self):
        # A 65535-byte client id, and one whose 21900 '/' become %2F: the
        # rendered topic (3.1.1: the event's; 5: the presence topic, the
        # event's being short) is over 65535 bytes. paho would write its
        # length modulo 65536 and the rest would be read as packet id and
        # payload; the sink counts such an event failed and sends neither
        # of its messages, and the next event goes through.
        long_ids = ["L" * 65535, "s" + "/" * 21900]
        for proto in ("3.1.1", "5"):
            with self.subTest(proto=proto):
                target = self.broker("target" + proto)
                sub = self.sub(target.port, v5=proto == "5")
                opts = [("node_id", "n9"), ("events", "client.connected"), ("mqtt_protocol", proto),
                        ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port)]
                if proto == "5":
                    opts += [("mqtt_topic", "eventhook/{node}/{event}"),
                             ("mqtt_presence_topic", "presence/{clientid}")]
                main = self.broker("main" + proto, plugin_opts=opts)
                for cid in long_ids:
                    client_session(main.port, cid)
                client_session(main.port, "sentinel")
                if proto == "5":
                    want = ["eventhook/n9/client.connected", "presence/sentinel"]
                else:
                    want = ["eventhook/n9/client.connected/sentinel"]
                wait_until(lambda: len(sub.snapshot()) == len(want), what="sentinel's messages")
                msgs = sub.snapshot()
                self.assertEqual([m[0] for m in msgs], want)
                self.assertEqual(json.loads(msgs[0][1])["clientid"], "sentinel")
                enq, dlv, fail, drop, left = self.stop_counts(main)
                self.assertEqual((enq, dlv, fail, drop, left), (3, 1, 2, 0, 0))
                what = "presence topic" if proto == "5" else "topic"
                for seq in (1, 2):
                    self.assertIn("eventhook: mqtt: the %s for event seq %d is longer than 65535 bytes; not "
                                  "published" % (what, seq), main.log())
                # Nothing corrupt reached the target: it never dropped the
                # sink, and nothing else arrived (the sentinel's messages
                # are the last the sink sent, in order).
                self.assertNotIn("lost", "\n".join(l for l in main.log().splitlines() if "mqtt: connection" in l))
                self.assertNotRegex(target.log(), r"malformed|protocol error|oversize")
                self.assertEqual([m[0] for m in sub.snapshot()], want)

    def test_event_over_target_max_packet_size_counted_failed(self):
        # One event bigger than the target's max_packet_size, then small
        # ones. MQTT 5: the target announces its limit in CONNACK and the
        # sink never sends the big one. 3.1.1 cannot announce it: the target
        # closes the connection each time it reads the packet's header, and
        # after POISON_STRIKES (3) such losses in a row the sink counts the
        # event failed, replaces its client and goes on.
        for proto in ("5", "3.1.1"):
            with self.subTest(proto=proto):
                target = self.broker("target" + proto, ["max_packet_size 2000"])
                sub = self.sub(target.port, topics=("ev/#",), v5=proto == "5")
                main = self.broker("main" + proto, plugin_opts=[
                    ("node_id", "n10"), ("events", "message.publish"), ("mqtt_protocol", proto),
                    ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_topic", "ev/{seq}"),
                    ("mqtt_reconnect_min", "1"), ("mqtt_reconnect_max", "1")])
                client_session(main.port, "pub", [("big", b"x" * 3000)] + [("small", b"%d" % i) for i in range(5)])
                wait_until(lambda: len(sub.events()) == 5, timeout=TIMEOUT * 2, what="the small events")
                self.assertEqual([e["seq"] for e in sub.events()], [2, 3, 4, 5, 6])
                enq, dlv, fail, drop, left = self.stop_counts(main)
                self.assertEqual((enq, dlv, fail, drop, left), (6, 5, 1, 0, 0))
                oversize = target.log().count("disconnected due to oversize packet")
                if proto == "5":
                    self.assertRegex(main.log(), r"mqtt: event seq 1: the PUBLISH on 'ev/1' would be \d+ bytes, "
                                     r"over the 2000 the target accepts \(its Maximum Packet Size\); not published")
                    self.assertEqual(oversize, 0)
                else:
                    self.assertRegex(main.log(), r"mqtt: event seq 1 \(a PUBLISH of \d+ bytes on 'ev/1'\) is "
                                     r"counted failed: the target closed the connection each time it was sent "
                                     r"\(3 times in a row")
                    # Usually exactly 3: the sink's thread, polling every
                    # 100 ms, drops it before paho's next reconnect (a
                    # second later). Not always: while events wait in the
                    # ring the thread sleeps out the runner's retry backoff
                    # (up to retry_max_ms), and paho may resend it meanwhile.
                    self.assertGreaterEqual(oversize, 3)

    def test_event_over_target_message_size_limit_never_stalls(self):
        # The target's message_size_limit (Mosquitto 2.0 drops a PUBLISH
        # whose payload is over it, and acknowledges it with a reason code
        # rather than closing the connection). MQTT 5 at QoS 1 and 2: the
        # refusal is seen, the event counted failed and logged with its
        # seq. 3.1.1 cannot tell (a plain PUBACK): the event counts
        # delivered, as documented. Either way the small events after it
        # arrive, in order, and nothing is resent for ever.
        for proto, qos in (("5", "1"), ("5", "2"), ("3.1.1", "1")):
            with self.subTest(proto=proto, qos=qos):
                name = "%s-q%s" % (proto, qos)
                target = self.broker("target" + name, ["message_size_limit 2000"])
                sub = self.sub(target.port, topics=("ev/#",), v5=proto == "5")
                main = self.broker("main" + name, plugin_opts=[
                    ("node_id", "n13"), ("events", "message.publish"), ("mqtt_protocol", proto),
                    ("mqtt_qos", qos), ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port),
                    ("mqtt_topic", "ev/{seq}"), ("mqtt_reconnect_min", "1"), ("mqtt_reconnect_max", "1")])
                client_session(main.port, "pub", [("small", b"a"), ("big", b"x" * 3000)] +
                               [("small", b"%d" % i) for i in range(4)])
                wait_until(lambda: len(sub.events()) == 5, what="the small events")
                self.assertEqual([e["seq"] for e in sub.events()], [1, 3, 4, 5, 6])
                enq, dlv, fail, drop, left = self.stop_counts(main)
                self.assertRegex(target.log(), r"Dropped too large PUBLISH from eventhook-n13 .*'ev/2'")
                if proto == "5":
                    self.assertEqual((enq, dlv, fail, drop, left), (6, 5, 1, 0, 0))
                    self.assertRegex(main.log(), r"eventhook: mqtt: the target refused a message on 'ev/2' "
                                                 r"\(event seq 2\): code 0, reason 149")
                else:
                    self.assertEqual((enq, dlv, fail, drop, left), (6, 6, 0, 0, 0))
                # Refused by an acknowledgement, not by closing the
                # connection: nothing was lost or resent.
                self.assertNotRegex(main.log(), r"mqtt: connection to \S+ lost")
                self.assertEqual(len(sub.events()), 5)

    def test_event_over_the_largest_mqtt_packet_counted_failed(self):
        # MQTT's remaining length is at most 268435455 bytes (4 bytes of 7
        # bits). A 201.4 MB publish (queue_bytes large enough to hold it)
        # is an event of about 268.6 MB of JSON: no MQTT packet can carry
        # it, whatever the target. paho.mqtt.c would encode its length in
        # 5 bytes, which every target reads as a malformed packet. The sink
        # counts it failed without sending it, and the next events go on.
        target = self.broker("target")
        sub = self.sub(target.port, topics=("ev/#",))
        main = self.broker("main", plugin_opts=[
            ("node_id", "n14"), ("events", "message.publish"), ("queue_bytes", str(1 << 30)),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_reconnect_min", "1"), ("mqtt_reconnect_max", "1")])
        client_session(main.port, "pub", [("small", b"a"), ("huge", b"\0" * 201_400_000), ("small", b"b")])
        wait_until(lambda: len(sub.events()) == 2, timeout=TIMEOUT * 3, what="the small events")
        self.assertEqual([e["seq"] for e in sub.events()], [1, 3])
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, dlv, fail, drop, left), (3, 2, 1, 0, 0))
        self.assertRegex(main.log(), r"eventhook: mqtt: event seq 2: the PUBLISH on 'ev/2' would be 2685\d{5} "
                                     r"bytes, over the 268435460 an MQTT packet can be; not published")
        self.assertNotRegex(main.log(), r"mqtt: connection to \S+ lost")

    def test_v5_max_packet_size_forgotten_after_target_restart(self):
        # paho calls the connect's onSuccess5 (which reads the CONNACK's
        # properties) for the first connection only: after an automatic
        # reconnect the sink cannot see the Maximum Packet Size, so it must
        # not keep failing events against the limit of a target that came
        # back without one.
        target = self.broker("target", ["max_packet_size 2000"])
        sub = self.sub(target.port, topics=("ev/#",), v5=True)
        main = self.broker("main", plugin_opts=[
            ("node_id", "n12"), ("events", "message.publish"), ("mqtt_protocol", "5"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("mqtt_topic", "ev/{seq}"),
            ("mqtt_reconnect_min", "1"), ("mqtt_reconnect_max", "1")])
        client_session(main.port, "pub", [("small", b"0")])
        wait_until(lambda: len(sub.events()) == 1, what="the first event")
        sub.close()
        target.stop()
        target.lines = []
        target.start()
        sub = self.sub(target.port, topics=("ev/#",), v5=True)
        wait_until(lambda: "mqtt: reconnected to" in main.log(), timeout=TIMEOUT * 2, what="the reconnect")
        client_session(main.port, "pub", [("big", b"x" * 3000), ("small", b"1")])
        wait_until(lambda: len(sub.events()) == 2, timeout=TIMEOUT * 2, what="the events after the restart")
        self.assertEqual([e["seq"] for e in sub.events()], [2, 3])
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, dlv, fail, drop, left), (3, 3, 0, 0, 0))
        self.assertNotIn("Maximum Packet Size", main.log())

    def test_v5_refusals_counted_failed_and_logged_rate_limited(self):
        # The target's ACL denies every publish of the sink: MQTT 5 at
        # QoS 1 reports each refusal (reason 135), so each event counts
        # failed; the warning is logged for the first 10 only (then every
        # 1000th), not once per event.
        target = self.broker("target", ["acl_file {dir}/acl"], start=False)
        with open(os.path.join(target.dir, "acl"), "w") as f:
            f.write("topic read #\n")
        target.start()
        main = self.broker("main", plugin_opts=[
            ("node_id", "n11"), ("events", "message.publish"), ("mqtt_protocol", "5"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % target.port), ("shutdown_timeout_ms", "3000")])
        client_session(main.port, "pub", [("t", b"%d" % i) for i in range(15)])
        enq, dlv, fail, drop, left = self.stop_counts(main)
        self.assertEqual((enq, dlv, fail, drop, left), (15, 0, 15, 0, 0))
        self.assertEqual(main.log().count("eventhook: mqtt: the target refused a message on"), 10)
        self.assertIn("(event seq 1): code 0, reason 135", main.log())

    # ---- options refused at start ----

    def run_bad(self, opts):
        b = Mosq(self.tmp, "bad", [], plugin_opts=opts)
        path = b.write_conf()
        env = dict(os.environ)
        if os.environ.get("EH_BROKER_PRELOAD"):
            env["LD_PRELOAD"] = os.environ["EH_BROKER_PRELOAD"]
        try:
            proc = subprocess.run([MOSQUITTO, "-c", path], capture_output=True, timeout=TIMEOUT, env=env)
        except subprocess.TimeoutExpired:
            self.fail("broker started with bad options %r" % (opts,))
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")

    def test_bad_options_refused_at_start(self):
        uri = ("mqtt_uri", "tcp://127.0.0.1:1")
        cases = [
            ([("mqtt_topic", "ev/#/{event}")], "plugin_opt_mqtt_topic: 'ev/#/{event}' holds '#'"),
            ([("mqtt_presence_topic", "p/+/{clientid}")], "plugin_opt_mqtt_presence_topic: 'p/+/{clientid}' holds '+'"),
            ([("mqtt_topic", "ev/\udcff/{event}")], "plugin_opt_mqtt_topic: the template is not valid UTF-8"),
            ([("mqtt_client_id", "bad\udcff")], "plugin_opt_mqtt_client_id: not valid UTF-8 (at byte 3)"),
            ([("mqtt_client_id", "x" * 65536)], "plugin_opt_mqtt_client_id: 65536 bytes; an MQTT string is at most "
                                                "65535"),
            ([("mqtt_username", "u\udcc0\udc80")], "plugin_opt_mqtt_username: not valid UTF-8 (at byte 1)"),
        ]
        for opts, needle in cases:
            with self.subTest(needle=needle):
                rc, text = self.run_bad([uri] + opts)
                self.assertNotEqual(rc, 0)
                self.assertIn(needle, text)

    # ---- loop safety ----

    def test_same_broker_no_loop(self):
        port = free_port()
        main = self.broker("main", port=port, plugin_opts=[
            ("node_id", "self"), ("events", "client.*,message.publish"),
            ("mqtt_uri", "tcp://127.0.0.1:%d" % port), ("mqtt_presence_topic", "presence/{clientid}"),
            ("stats_interval", "1")])
        sub = self.sub(port, topics=("eventhook/#", "presence/#"), client_id="watcher")
        wait_until(lambda: "mqtt: connected to" in main.log(), what="sink connected to itself")
        client_session(port, "worker", [("w/1", b"a"), ("w/2", b"b")])
        client_session(port, "sentinel")
        wait_until(lambda: any(e["clientid"] == "sentinel" and e["event"] == "client.disconnected"
                               for e in sub.events()), what="sentinel")
        evs = sub.events()
        ids = {e["clientid"] for e in evs}
        self.assertNotIn("eventhook-self", ids)
        # The subscriber's own session (connect, connected, subscribe x2) came first.
        mine = [(e["clientid"], e["event"], e.get("topic")) for e in evs if e["clientid"] != "watcher"]
        self.assertEqual(mine, [
            ("worker", "client.connect", None), ("worker", "client.connected", None),
            ("worker", "message.publish", "w/1"), ("worker", "message.publish", "w/2"),
            ("worker", "client.disconnected", None),
            ("sentinel", "client.connect", None), ("sentinel", "client.connected", None),
            ("sentinel", "client.disconnected", None)])
        enq, dlv, fail, drop, left = self.stop_counts(main)
        # Everything the sink captured is the subscriber's and the test
        # clients' doing: its own publishes produced nothing. The watcher
        # caused connect, connected, two subscribes and its disconnect at
        # shutdown (it may miss its own first events: they can be published
        # before its subscription is in place, so count them, not len(evs)).
        self.assertEqual(enq, 5 + len(mine))
        self.assertEqual((fail, drop), (0, 0))
        self.assertEqual(dlv + left, enq)


if __name__ == "__main__":
    unittest.main()
