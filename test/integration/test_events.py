"""The events a user sees: exact types, fields and order for each client
scenario, against the real broker with the file and local sinks.

Each test drives real MQTT clients (RawClient, which reports the broker's
exact answers) and reads the JSON lines the file sink wrote. "Nothing more
happened" is proven with a sentinel client whose events come after every
event of the scenario, never with a sleep.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import (MQTTV311, MQTTV5, TIMEOUT, Broker, BrokerTestCase,  # noqa: E402
                        Client, RawClient, Will, read_events, wait_events, wait_until,
                        write_password_file)
from test_transparency import build_helper_plugin  # noqa: E402

# Another plugin that authenticates every client itself (and has no ACL
# callback), so that ours never sees their authentication.
ACCEPTING_PLUGIN_C = r"""
#include <stddef.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
static mosquitto_plugin_id_t *plugin_id;
static int accept_all(int event, void *data, void *user) { (void)event; (void)data; (void)user; return MOSQ_ERR_SUCCESS; }
int mosquitto_plugin_version(int n, const int *v) { (void)n; (void)v; return 5; }
int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **u, struct mosquitto_opt *o, int c)
{
	(void)u; (void)o; (void)c;
	plugin_id = id;
	return mosquitto_callback_register(id, MOSQ_EVT_BASIC_AUTH, accept_all, NULL, NULL);
}
int mosquitto_plugin_cleanup(void *u, struct mosquitto_opt *o, int c)
{
	(void)u; (void)o; (void)c;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, accept_all, NULL);
}
"""

ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
COMMON = ["event", "id", "ts", "node", "seq", "clientid", "peer", "protocol"]


def of(events, clientid):
    return [e for e in events if e.get("clientid") == clientid]


def kinds(events):
    return [e["event"] for e in events]


class EventsTest(BrokerTestCase):
    def broker(self, conf=("allow_anonymous true",), files=None, before=(), listeners=None, **opts):
        """A broker with the plugin writing events.jsonl in its directory.
        files: {name: text} written there first; "{dir}" in conf lines is
        replaced by that directory; before: plugins listed before ours;
        listeners: one list of lines per listener."""
        plugin_opts = {"node_id": "test-node", "events": "*", "file_path": None}
        plugin_opts.update(opts)
        b = Broker([], start=False, plugin_opts=None, extra_plugins_before=before, listeners=listeners,
                   name=self._testMethodName)
        self.add_broker(b)
        for name, text in (files or {}).items():
            with open(b.path(name), "w") as f:
                f.write(text)
        b.configure(conf_lines=[line.replace("{dir}", str(b.dir)) for line in conf])
        plugin_opts["file_path"] = b.path("events.jsonl")
        b.plugin_opts = [(k, v) for k, v in plugin_opts.items() if v is not None]
        b.start()
        b.events_path = b.path("events.jsonl")
        return b

    def sentinel(self, b, name="zz-sentinel"):
        """Connects and disconnects a sentinel client and waits for its
        disconnected event: every event caused before it is then written."""
        c = RawClient(b.port, name)
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        return wait_events(b.events_path, lambda evs: any(
            e["event"] == "client.disconnected" and e["clientid"] == name for e in evs))

    def assert_common(self, events, node="test-node"):
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, list(range(1, len(events) + 1)), "seq counts every event from 1")
        ids = [e["id"] for e in events]
        self.assertEqual(len(set(ids)), len(ids), "ids are unique")
        for e in events:
            for k in COMMON:
                self.assertIn(k, e, e)
            self.assertRegex(e["id"], ID_RE)
            self.assertRegex(e["ts"], TS_RE)
            self.assertEqual(e["node"], node)
            self.assertEqual(e["protocol"], "mqtt")
            self.assertEqual(e["peer"], "127.0.0.1")
            self.assertNotIn("password", json.dumps(e))

    def test_lifecycle_mqtt311_exact_fields(self):
        b = self.broker()
        c = RawClient(b.port, "dev-1", MQTTV311)
        self.assertEqual(c.connect(username="u1", keepalive=30).rc, 0)
        self.assertEqual(c.subscribe([("s/#", 1)]), [1])
        self.assertEqual(c.publish("s/x", b"\x00\xffhi", qos=1), 0)
        c.wait_messages(1)
        c.unsubscribe("s/#")
        c.disconnect()
        evs = of(self.sentinel(b), "dev-1")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "client.subscribe",
                                      "message.publish", "client.unsubscribe", "client.disconnected"])
        connect, connected, sub, pub, unsub, disc = evs
        for e in (connect, connected):
            self.assertEqual(e["username"], "u1")
            self.assertEqual(e["proto_ver"], 4)
            self.assertEqual(e["keepalive"], 30)
            self.assertIs(e["clean_start"], True)
        self.assertIs(connected["inferred"], True)
        self.assertNotIn("inferred", connect)
        self.assertEqual((sub["topic"], sub["qos"], sub["granted"]), ("s/#", 1, True))
        self.assertEqual((pub["topic"], pub["qos"], pub["retain"], pub["payload_size"]), ("s/x", 1, False, 4))
        self.assertEqual(pub["payload"], "AP9oaQ==")
        self.assertEqual(unsub["topic"], "s/#")
        self.assertEqual(disc["reason"], "unknown")
        self.assertIsInstance(disc["connected_ms"], int)
        self.assertGreaterEqual(disc["connected_ms"], 0)
        self.assert_common(read_events(b.events_path))

    def test_lifecycle_mqtt5_anonymous_retained_qos2(self):
        b = self.broker()
        c = RawClient(b.port, "dev-5", MQTTV5)
        self.assertEqual(c.connect(clean=False, session_expiry=60, keepalive=0).rc, 0)
        self.assertEqual(c.publish("r/t", "retained", qos=2, retain=True), 0)
        c.disconnect()
        evs = of(self.sentinel(b), "dev-5")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "message.publish",
                                      "client.disconnected"])
        self.assertNotIn("username", evs[0])
        # 2.0 gives an MQTT 5 client asking for no keepalive its default
        # max_keepalive, 65535, and says so in CONNACK: that is the value
        # in force
        self.assertEqual((evs[0]["proto_ver"], evs[0]["keepalive"], evs[0]["clean_start"]), (5, 65535, False))
        self.assertEqual((evs[2]["qos"], evs[2]["retain"]), (2, True))

    def test_refused_connections(self):
        b = self.broker(conf=["allow_anonymous false", "password_file {dir}/pw"], files={"pw": ""})
        write_password_file(b.path("pw"), {"alice": "secret"})
        b.sighup()
        good = RawClient(b.port, "good")
        self.assertEqual(good.connect(username="alice", password="secret").rc, 0)
        good.disconnect()
        for cid, user, pw in (("wrong-pw", "alice", "nope"), ("unknown-user", "mallory", "x"),
                              ("anon", None, None)):
            c = RawClient(b.port, cid)
            self.assertEqual(c.connect(username=user, password=pw).rc, 5, cid)
            c.close()
        s = RawClient(b.port, "zz-sentinel")
        self.assertEqual(s.connect(username="alice", password="secret").rc, 0)
        s.disconnect()
        evs = wait_events(b.events_path, lambda e: any(x["clientid"] == "zz-sentinel"
                                                       and x["event"] == "client.disconnected" for x in e))
        self.assertEqual(kinds(of(evs, "good")), ["client.connect", "client.connected", "client.disconnected"])
        for cid in ("wrong-pw", "unknown-user", "anon"):
            got = of(evs, cid)
            self.assertEqual(kinds(got), ["client.connect", "client.connect_failed"], cid)
            self.assertEqual(got[1]["reason"], "not_authorized")
        self.assertEqual(of(evs, "wrong-pw")[1]["username"], "alice")
        self.assertNotIn("nope", open(b.events_path).read())
        self.assertNotIn("secret", open(b.events_path).read())

    def test_authz_denied_publish_and_allowed(self):
        b = self.broker(conf=["allow_anonymous true", "acl_file {dir}/acl"],
                        files={"acl": "topic readwrite open/#\n"})
        c = RawClient(b.port, "pub5", MQTTV5)
        self.assertEqual(c.connect().rc, 0)
        self.assertEqual(c.publish("closed/x", b"no", qos=1), 135)
        self.assertEqual(c.publish("open/x", b"yes", qos=1), 16)  # no matching subscribers
        self.assertEqual(c.subscribe("closed/#"), [0])
        c.disconnect()
        evs = of(self.sentinel(b), "pub5")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "client.authz_denied",
                                      "message.publish", "client.subscribe", "client.disconnected"])
        d = evs[2]
        self.assertEqual((d["action"], d["topic"], d["qos"], d["retain"]), ("publish", "closed/x", 1, False))
        self.assertEqual(evs[3]["topic"], "open/x")
        # with an acl_file a SUBSCRIBE is always granted by the broker
        self.assertIs(evs[4]["granted"], True)

    def test_lifecycle_only_registers_less_and_stays_exact(self):
        """A deployment that wants only refusals and disconnections: the
        plugin registers neither ACL_CHECK nor MESSAGE (the broker keeps its
        own checks alone), and refusals, takeovers and disconnections are
        still exact."""
        b = self.broker(conf=["allow_anonymous false", "password_file {dir}/pw"], files={"pw": ""},
                        events="client.connect_failed,client.disconnected")
        write_password_file(b.path("pw"), {"alice": "secret"})
        b.sighup()
        self.assertIn("subscriptions and authorization not needed, messages not needed", b.log())
        good = RawClient(b.port, "good")
        self.assertEqual(good.connect(username="alice", password="secret").rc, 0)
        self.assertEqual(good.subscribe([("s/#", 1)]), [1])
        self.assertEqual(good.publish("s/x", b"hi", qos=1), 0)
        good.wait_messages(1)
        good.disconnect()
        bad = RawClient(b.port, "bad")
        self.assertEqual(bad.connect(username="alice", password="nope").rc, 5)
        bad.close()
        first = RawClient(b.port, "dup")
        self.assertEqual(first.connect(username="alice", password="secret").rc, 0)
        second = RawClient(b.port, "dup")
        self.assertEqual(second.connect(username="alice", password="secret").rc, 0)
        self.assertTrue(first.wait_closed())
        second.disconnect()
        s = RawClient(b.port, "zz-sentinel")
        self.assertEqual(s.connect(username="alice", password="secret").rc, 0)
        s.disconnect()
        evs = wait_events(b.events_path, lambda e: any(x["clientid"] == "zz-sentinel" for x in e))
        self.assertEqual([(e["event"], e["clientid"], e["reason"]) for e in evs], [
            ("client.disconnected", "good", "unknown"),
            ("client.connect_failed", "bad", "not_authorized"),
            ("client.disconnected", "dup", "session_taken_over"),
            ("client.disconnected", "dup", "unknown"),
            ("client.disconnected", "zz-sentinel", "unknown")])
        self.assertEqual(evs[0]["username"], "alice")
        self.assertGreaterEqual(evs[0]["connected_ms"], 0)
        self.assert_common(evs)

    def test_uninterested_sink_starts_its_thread_at_its_first_event(self):
        """A sink with nothing to send has no thread, so a broker whose
        sinks want none of its traffic stays single-threaded (glibc's fast
        paths); the first wanted event starts it and nothing is lost."""
        b = self.broker(events="client.*,message.publish", file_events="message.publish")

        def threads():
            return len(os.listdir(f"/proc/{b.proc.pid}/task"))

        def names():
            out = []
            for tid in os.listdir(f"/proc/{b.proc.pid}/task"):
                with open(f"/proc/{b.proc.pid}/task/{tid}/comm") as f:
                    out.append(f.read().strip())
            return out

        before = threads()
        c = RawClient(b.port, "quiet")
        self.assertEqual(c.connect().rc, 0)
        self.assertEqual(c.subscribe([("q/#", 0)]), [0])
        b.sighup()  # a reload before the thread exists is kept for it
        self.assertEqual(threads(), before, "no thread while nothing is wanted")
        self.assertEqual(c.publish("q/1", b"first", qos=1), 0)
        evs = wait_events(b.events_path, lambda e: len(e) >= 1)
        self.assertEqual(threads(), before + 1)
        # named after its sink, for top -H and ps -L
        self.assertEqual(names().count("eh-file"), 1)
        self.assertEqual(c.publish("q/2", b"second", qos=1), 0)
        c.disconnect()
        evs = wait_events(b.events_path, lambda e: len(e) >= 2)
        self.assertEqual([(e["event"], e["topic"]) for e in evs],
                         [("message.publish", "q/1"), ("message.publish", "q/2")])
        self.assertEqual(b.stop(), 0)
        self.assertIn("eventhook: file: stopped; enqueued 2, delivered 2, failed 0, dropped 0, "
                      "left undelivered at shutdown 0", b.log())

    def test_session_takeover_orders_disconnect_first(self):
        b = self.broker()
        first = RawClient(b.port, "dup")
        self.assertEqual(first.connect().rc, 0)
        second = RawClient(b.port, "dup")
        self.assertEqual(second.connect().rc, 0)
        self.assertTrue(first.wait_closed())
        second.disconnect()
        evs = of(self.sentinel(b), "dup")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "client.disconnected",
                                      "client.connect", "client.connected", "client.disconnected"])
        self.assertEqual(evs[2]["reason"], "session_taken_over")
        self.assertEqual(evs[5]["reason"], "normal_disconnection" if b.capture_21() else "unknown")

    def test_durable_session_resume_reports_once(self):
        b = self.broker()
        c = RawClient(b.port, "durable")
        self.assertEqual(c.connect(clean=False).rc, 0)
        c.subscribe([("d/#", 1)])
        c.disconnect()
        p = RawClient(b.port, "pusher")
        p.connect()
        p.publish("d/1", b"while offline", qos=1)
        p.disconnect()
        c = RawClient(b.port, "durable")
        ack = c.connect(clean=False)
        self.assertEqual((ack.rc, ack.session_present), (0, True))
        c.wait_messages(1)
        c.disconnect()
        evs = of(self.sentinel(b), "durable")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "client.subscribe",
                                      "client.disconnected", "client.connect", "client.connected",
                                      "client.disconnected"])
        self.assertIs(evs[4]["clean_start"], False)

    def test_will_is_not_a_publish_event(self):
        b = self.broker()
        w = RawClient(b.port, "willer")
        self.assertEqual(w.connect(will=Will("wills/willer", b"gone", 1, False)).rc, 0)
        w.drop()
        evs = of(self.sentinel(b), "willer")
        self.assertEqual(kinds(evs), ["client.connect", "client.connected", "client.disconnected"])

    # Wills travel through the ACL WRITE check like a PUBLISH, but without
    # the MESSAGE event that proves a PUBLISH allowed: none of them may read
    # as a denial, nor bring an offline session back to life.
    WILL_ACL = {"acl": "topic readwrite will/#\ntopic readwrite open/#\n"}

    def will_broker(self, conf=(), **opts):
        return self.broker(conf=["allow_anonymous true", "acl_file {dir}/acl"] + list(conf),
                           files=self.WILL_ACL, **opts)

    def watcher(self, b):
        w = RawClient(b.port, "watcher")
        self.assertEqual(w.connect().rc, 0)
        self.assertEqual(w.subscribe([("will/#", 0)]), [0])
        return w

    def test_takeover_sends_the_will_without_a_denial(self):
        """At a takeover 2.0 and 2.1 check the old connection's will while
        it is still connected, before its DISCONNECT; the publish it was
        denied just before is still reported."""
        b = self.will_broker()
        end = "normal_disconnection" if b.capture_21() else "unknown"
        w = self.watcher(b)
        for proto, cid in ((MQTTV311, "dup4"), (MQTTV5, "dup5")):
            first = RawClient(b.port, cid, proto)
            self.assertEqual(first.connect(will=Will(f"will/{cid}", b"gone")).rc, 0)
            rc = first.publish("closed/x", b"no", qos=1)
            self.assertEqual(rc, 135 if proto == MQTTV5 else 0)
            second = RawClient(b.port, cid, proto)
            self.assertEqual(second.connect().rc, 0)
            self.assertTrue(first.wait_closed())
            w.wait_messages(lambda m, cid=cid: any(x.topic == f"will/{cid}" for x in m))
            second.disconnect()
        evs = self.sentinel(b)
        for cid in ("dup4", "dup5"):
            got = of(evs, cid)
            self.assertEqual(kinds(got), ["client.connect", "client.connected", "client.authz_denied",
                                          "client.disconnected", "client.connect", "client.connected",
                                          "client.disconnected"], cid)
            self.assertEqual((got[2]["action"], got[2]["topic"], got[2]["qos"]), ("publish", "closed/x", 1))
            self.assertEqual(got[3]["reason"], "session_taken_over")
            self.assertEqual(got[6]["reason"], end)
        self.assertEqual(kinds(of(evs, "watcher")), ["client.connect", "client.connected", "client.subscribe"])

    def test_takeover_wills_sent_denied_or_dropped_are_no_denials(self):
        """Every way a takeover treats the old connection's will gives the
        same exact events on 2.0 and 2.1: sent (a clean new connection, or an
        old one whose session ends with it), refused by the ACL, or dropped
        unsent (a durable session resumed). A connection with the same id
        that is refused takes nothing over: the old one stays, with its will."""
        d = tempfile.mkdtemp(prefix="eh-pw-")
        self.addCleanup(shutil.rmtree, d, True)
        pw = Path(write_password_file(Path(d) / "pw", {"u": "right"})).read_text()
        b = self.broker(conf=["allow_anonymous true", "acl_file {dir}/acl", "password_file {dir}/pw"],
                        files=dict(self.WILL_ACL, pw=pw))
        w = self.watcher(b)
        cases = [  # client id, protocol, old clean, old session expiry, will topic, new clean, will sent
            ("t4-sent", MQTTV311, True, None, "will/t4-sent", True, True),
            ("t5-sent", MQTTV5, True, 60, "will/t5-sent", True, True),
            ("t5-closed", MQTTV5, True, None, "closed/t5", True, False),
            ("t5-resumed", MQTTV5, True, 60, "will/t5-resumed", False, False),
            ("t4-resumed", MQTTV311, False, None, "will/t4-resumed", False, False),
        ]
        for cid, proto, old_clean, expiry, topic, clean, _ in cases:
            old = RawClient(b.port, cid, proto)
            self.assertEqual(old.connect(clean=old_clean, session_expiry=expiry, will=Will(topic, b"gone")).rc, 0)
            refused = RawClient(b.port, cid, MQTTV311)
            self.assertEqual(refused.connect(username="u", password="wrong").rc, 5, cid)
            self.assertTrue(refused.wait_closed(), cid)
            self.assertTrue(old.ping(), cid)
            new = RawClient(b.port, cid, proto)
            ack = new.connect(clean=clean, session_expiry=expiry)
            self.assertEqual((ack.rc, ack.session_present), (0, not clean), cid)
            self.assertTrue(old.wait_closed(), cid)
            new.disconnect()
        self.assertTrue(w.ping())
        self.assertEqual([m.topic for m in w.take_messages()], [c[4] for c in cases if c[6]])
        evs = self.sentinel(b)
        end = "normal_disconnection" if b.capture_21() else "unknown"
        for cid, _, _, _, _, clean, _ in cases:
            got = of(evs, cid)
            self.assertEqual([(e["event"], e.get("reason")) for e in got], [
                ("client.connect", None), ("client.connected", None),
                ("client.connect", None), ("client.connect_failed", "not_authorized"),
                ("client.disconnected", "session_taken_over"),
                ("client.connect", None), ("client.connected", None), ("client.disconnected", end)], cid)
            self.assertIs(got[5]["clean_start"], clean, cid)

    def test_delayed_will_resumed_session_and_stop_add_no_events(self):
        """An MQTT 5 will with a delay is checked for the offline session
        when the delay ends: no client.connected, no denial, and no entry
        left behind to be reported again on resume or at shutdown."""
        b = self.will_broker()
        w = self.watcher(b)
        c = RawClient(b.port, "wd", MQTTV5)
        will = Will("will/wd", b"gone", 0, False, {"will_delay_interval": 1})
        self.assertEqual(c.connect(session_expiry=60, will=will).rc, 0)
        c.publish("closed/y", b"no", qos=0)  # denied, right before the connection drops
        c.drop()
        w.wait_messages(lambda m: any(x.topic == "will/wd" for x in m))
        self.sentinel(b, "zz-after-will")
        c = RawClient(b.port, "wd", MQTTV5)
        ack = c.connect(clean=False, session_expiry=60)
        self.assertEqual((ack.rc, ack.session_present), (0, True))
        self.sentinel(b, "zz-after-resume")
        self.assertEqual(b.stop(), 0)
        got = of(read_events(b.events_path), "wd")
        self.assertEqual(kinds(got), ["client.connect", "client.connected", "client.authz_denied",
                                      "client.disconnected", "client.connect", "client.connected",
                                      "client.disconnected"])
        self.assertEqual((got[2]["topic"], got[2]["qos"]), ("closed/y", 0))
        self.assertEqual(got[3]["reason"], "unknown")
        self.assertIs(got[4]["clean_start"], False)
        self.assertEqual(got[6]["reason"], "broker_shutdown")

    def test_session_expiry_with_a_pending_will_leaves_nothing(self):
        """A session that expires before its will delay sends the will then;
        the client id connecting again later is a new client, not a takeover
        of a ghost, and the broker's stop reports it once."""
        b = self.will_broker()
        w = self.watcher(b)
        c = RawClient(b.port, "se", MQTTV5)
        will = Will("will/se", b"gone", 0, False, {"will_delay_interval": 3600})
        self.assertEqual(c.connect(session_expiry=1, will=will).rc, 0)
        c.drop()
        w.wait_messages(lambda m: any(x.topic == "will/se" for x in m))
        self.sentinel(b, "zz-after-expiry")
        c = RawClient(b.port, "se", MQTTV5)
        ack = c.connect(clean=False)
        self.assertEqual((ack.rc, ack.session_present), (0, False))
        self.sentinel(b, "zz-after-reconnect")
        self.assertEqual(b.stop(), 0)
        got = of(read_events(b.events_path), "se")
        self.assertEqual([(e["event"], e.get("reason")) for e in got], [
            ("client.connect", None), ("client.connected", None), ("client.disconnected", "unknown"),
            ("client.connect", None), ("client.connected", None), ("client.disconnected", "broker_shutdown")])

    def assert_adopted_session(self, b, cid, connect, drop):
        """A client that never reaches our BASIC_AUTH is adopted at its first
        event. Its session going offline, its delayed will and its resume
        add nothing, and the resumed connection is adopted in turn.
        connect(clean, will) returns the connected client; drop(client)
        closes it without DISCONNECT."""
        w = self.watcher(b)
        c = connect(True, Will(f"will/{cid}", b"gone", 0, False, {"will_delay_interval": 1}))
        self.assertEqual(c.subscribe([("open/#", 0)]), [0])
        self.assertEqual(c.publish("open/x", b"1", qos=1), 0)
        self.assertEqual(c.publish("closed/x", b"2", qos=1), 135)
        drop(c)
        w.wait_messages(lambda m: any(x.topic == f"will/{cid}" for x in m))
        self.sentinel(b, "zz-after-will")
        c = connect(False, None)
        self.assertEqual(c.publish("open/y", b"3", qos=1), 0)
        self.sentinel(b, "zz-after-resume")
        self.assertEqual(b.stop(), 0)
        got = of(read_events(b.events_path), cid)
        self.assertEqual([(e["event"], e.get("topic"), e.get("reason")) for e in got], [
            ("client.connected", None, None), ("client.subscribe", "open/#", None),
            ("message.publish", "open/x", None), ("client.authz_denied", "closed/x", None),
            ("client.disconnected", None, "unknown"),
            ("client.connected", None, None), ("message.publish", "open/y", None),
            ("client.disconnected", None, "broker_shutdown")])
        self.assertIs(got[0]["inferred"], True)
        return got

    def test_client_accepted_by_a_plugin_before_us_is_adopted_and_its_will_ignored(self):
        d = tempfile.mkdtemp(prefix="eh-accepting-")
        self.addCleanup(shutil.rmtree, d, True)
        accepting = build_helper_plugin(Path(d), "accepting", ACCEPTING_PLUGIN_C)
        b = self.will_broker(before=[accepting])
        self.assertIn("subscriptions and authorization seen", b.log())

        def connect(clean, will):
            c = RawClient(b.port, "ad", MQTTV5)
            ack = c.connect(clean=clean, session_expiry=60, will=will)
            self.assertEqual((ack.rc, ack.session_present), (0, not clean))
            return c

        self.assert_adopted_session(b, "ad", connect, lambda c: c.drop())

    def certificate_broker(self):
        """A broker with a plain listener for anonymous clients (watcher,
        sentinels) and a TLS one where the client certificate's CN, ti-user,
        is the username (use_identity_as_username: no BASIC_AUTH at all).
        Returns the broker and connect(client_id, protocol) -> a paho
        Client set up for that listener."""
        d = Path(tempfile.mkdtemp(prefix="eh-certs-"))
        self.addCleanup(shutil.rmtree, d, True)

        def openssl(*args):
            subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                "-days", "2", "-subj", "/CN=eventhook test CA")
        for name, cn, ext in (("server", "127.0.0.1", ["-extfile", "san.ext"]), ("client", "ti-user", [])):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                    "-subj", f"/CN={cn}")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext)
        tls = [f"cafile {d}/ca.crt", f"certfile {d}/server.crt", f"keyfile {d}/server.key",
               "require_certificate true", "use_identity_as_username true"]
        acl = "topic readwrite will/#\ntopic readwrite open/#\nuser ti-user\ntopic readwrite will/#\n" \
              "topic readwrite open/#\n"
        b = self.broker(conf=["allow_anonymous true", "acl_file {dir}/acl"], files={"acl": acl},
                        listeners=[[], tls])

        def client(cid, proto):
            c = Client(b.ports[1], cid, proto)
            c.paho.tls_set(ca_certs=str(d / "ca.crt"), certfile=str(d / "client.crt"),
                           keyfile=str(d / "client.key"))
            self.addCleanup(c.close)
            return c

        return b, client

    def test_certificate_identity_client_is_adopted_and_its_will_ignored(self):
        """use_identity_as_username: the broker authenticates by the client
        certificate and calls no BASIC_AUTH at all."""
        b, client = self.certificate_broker()

        def connect(clean, will):
            c = client("ti", MQTTV5)
            self.assertEqual(c.connect(clean_start=clean, session_expiry=60, will=will), 0)
            self.assertEqual(c.session_present, not clean)
            return c

        got = self.assert_adopted_session(b, "ti", connect, lambda c: c.close())
        self.assertEqual({e.get("username") for e in got}, {"ti-user"})

    def test_takeover_by_a_certificate_identity_connection(self):
        """A connection accepted by certificate identity gives no BASIC_AUTH
        before the broker sends the will of the connection it takes over.
        2.1 names the takeover in the DISCONNECT after the will: exact. 2.0
        gives no sign of it, so that will is reported as a denied publish
        and the end as unknown (docs/capture.md, "Known limits")."""
        b, client = self.certificate_broker()
        v21 = b.capture_21()
        w = self.watcher(b)
        old = client("tk", MQTTV5)
        self.assertEqual(old.connect(will=Will("will/tk", b"gone")), 0)
        self.assertEqual(old.publish("closed/x", b"no", qos=1), 135)
        new = client("tk", MQTTV5)
        self.assertEqual(new.connect(), 0)
        self.assertEqual([m.topic for m in w.wait_messages(1)], ["will/tk"])
        new.disconnect()
        got = [(e["event"], e.get("topic"), e.get("reason")) for e in of(self.sentinel(b), "tk")]
        if v21:
            self.assertEqual(got, [
                ("client.connected", None, None), ("client.authz_denied", "closed/x", None),
                ("client.disconnected", None, "session_taken_over"),
                ("client.connected", None, None), ("client.disconnected", None, "normal_disconnection")])
        else:
            self.assertEqual(got, [
                ("client.connected", None, None), ("client.authz_denied", "closed/x", None),
                ("client.authz_denied", "will/tk", None), ("client.disconnected", None, "unknown"),
                ("client.connected", None, None), ("client.disconnected", None, "unknown")])

    def test_keepalive_is_the_one_the_broker_applies(self):
        """max_keepalive lowers an MQTT 5 client's keepalive after
        authentication (CONNACK server_keep_alive); the events carry the
        value in force. MQTT 3.1.1 clients keep theirs."""
        b = self.broker(conf=["allow_anonymous true", "max_keepalive 30"])
        asked = {"k5-60": (MQTTV5, 60, 30), "k5-0": (MQTTV5, 0, 30), "k5-20": (MQTTV5, 20, 20),
                 "k4-60": (MQTTV311, 60, 60)}
        for cid, (proto, ka, applied) in asked.items():
            c = RawClient(b.port, cid, proto)
            ack = c.connect(keepalive=ka)
            self.assertEqual(ack.rc, 0)
            self.assertEqual(ack.properties.get("server_keep_alive", ka), applied, cid)
            c.disconnect()
        evs = self.sentinel(b)
        for cid, (proto, ka, applied) in asked.items():
            got = of(evs, cid)
            self.assertEqual(kinds(got), ["client.connect", "client.connected", "client.disconnected"])
            self.assertEqual([e["keepalive"] for e in got[:2]], [applied, applied], cid)

    def test_hostile_client_data_gives_valid_json(self):
        cases = {
            "long": ("L" * 65535, "u"),
            "long-user": ("lu", "U" * 65535),
            "ctl": ("ctl\x01\x1f\x7f", "u"),
            "ctl-user": ("cu", "u\x02\x1b[31m"),
            "unicode": ("d\u00e9v-\u2603-\U0001F600", "\u00fcser"),
            "slashes": ("a/b+#%", "u"),
            # invalid UTF-8 and an encoded surrogate: the broker refuses these
            # itself; the plugin must neither crash nor write bad JSON
            "bad-utf8": (b"bad\xff\xfe", "u"),
            "surrogate-user": ("su", b"\xed\xa0\x80"),
        }

        def run(b):
            answers = {}
            for name, (cid, user) in cases.items():
                c = RawClient(b.port, cid, MQTTV311)
                answers[name] = c.connect(username=user).rc
                if answers[name] == 0:
                    c.publish("t/\u00e9", bytes(range(256)), qos=1)
                    c.disconnect()
                c.close()
            return answers

        plain = self.start_broker(["allow_anonymous true"], plugin=False)
        expected = run(plain)
        b = self.broker()
        answers = run(b)
        self.assertEqual(answers, expected, "the broker answers hostile clients as without the plugin")
        evs = self.sentinel(b)
        with open(b.events_path, "rb") as f:
            for line in f.read().splitlines():
                json.loads(line.decode("utf-8"))  # every line is UTF-8 JSON
        for name, (cid, user) in cases.items():
            if isinstance(cid, bytes):
                continue
            got = of(evs, cid)
            if answers[name] == 0:
                self.assertEqual(kinds(got), ["client.connect", "client.connected", "message.publish",
                                              "client.disconnected"], name)
                self.assertEqual(got[0]["username"], user)
                self.assertEqual(got[2]["payload_size"], 256)
                self.assertEqual(got[2]["topic"], "t/\u00e9")
            else:
                self.assertNotIn("client.connected", kinds(got), name)
        self.assertEqual(answers["long"], 0, "a 65535-byte client id is accepted by the broker")
        self.assertEqual(answers["long-user"], 0, "a 65535-byte username is accepted by the broker")
        self.assertTrue(b.alive())

    def test_sighup_reopens_file_and_keeps_capturing(self):
        b = self.broker()
        c = RawClient(b.port, "before")
        c.connect()
        c.disconnect()
        self.sentinel(b, "zz-1")
        os.rename(b.events_path, b.events_path + ".1")
        b.sighup()
        c = RawClient(b.port, "after")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        evs = self.sentinel(b, "zz-2")
        old = read_events(b.events_path + ".1")
        self.assertEqual(kinds(of(old, "before")), ["client.connect", "client.connected", "client.disconnected"])
        self.assertEqual(kinds(of(evs, "after")), ["client.connect", "client.connected", "client.disconnected"])
        self.assertEqual(of(evs, "before"), [])
        # seq continues across the reopen: nothing was lost
        self.assertEqual(evs[0]["seq"], old[-1]["seq"] + 1)

    def test_shutdown_reports_connected_clients_and_counters(self):
        b = self.broker()
        clients = []
        for i in range(3):
            c = RawClient(b.port, f"stay-{i}")
            self.assertEqual(c.connect().rc, 0)
            clients.append(c)
        self.sentinel(b)
        self.assertEqual(b.stop(), 0)
        evs = read_events(b.events_path)
        for i in range(3):
            got = of(evs, f"stay-{i}")
            self.assertEqual(kinds(got), ["client.connect", "client.connected", "client.disconnected"])
            self.assertEqual(got[-1]["reason"], "broker_shutdown")
        m = re.search(r"eventhook: file: stopped; enqueued (\d+), delivered (\d+), failed (\d+), "
                      r"dropped (\d+), left undelivered at shutdown (\d+)", b.log())
        self.assertIsNotNone(m, "counters logged at shutdown")
        enq, dlv, fail, drop, left = map(int, m.groups())
        self.assertEqual((enq, dlv, fail, drop, left), (len(evs), len(evs), 0, 0, 0))
        for c in clients:
            c.close()

    def test_event_and_topic_filters_per_sink(self):
        b = self.broker(events="client.*,message.publish", file_events="client.connected,client.disconnected,"
                        "message.publish", file_topics="keep/#", topics="keep/#,drop/#",
                        local_topic="$ev/{event}/{clientid}", local_events="client.subscribe")
        viewer = RawClient(b.port, "viewer")
        viewer.connect()
        viewer.subscribe("$ev/#")
        c = RawClient(b.port, "f1")
        c.connect()
        c.subscribe(["keep/a", "drop/a", "other/a"])
        c.publish("keep/x", b"1", qos=1)
        c.publish("drop/x", b"2", qos=1)
        c.disconnect()
        evs = of(self.sentinel(b), "f1")
        self.assertEqual(kinds(evs), ["client.connected", "message.publish", "client.disconnected"])
        self.assertEqual(evs[1]["topic"], "keep/x")
        msgs = viewer.wait_messages(lambda m: len([x for x in m if b"f1" in x.topic.encode()]) >= 2)
        got = [(m.topic, json.loads(m.payload)["topic"]) for m in msgs if "/f1" in m.topic]
        self.assertEqual(got, [("$ev/client.subscribe/f1", "keep/a"), ("$ev/client.subscribe/f1", "drop/a")])
        # its own seq, per sink, also from 1
        self.assertEqual(json.loads(msgs[0].payload)["seq"], 1)
        viewer.close()

    def publish_sizes(self, b, clientid, sizes):
        """Publishes one payload of each size (distinct bytes, QoS 1) and
        returns them with the message.publish events of the client."""
        payloads = [bytes((i * 7 + n) % 256 for i in range(n)) for n in sizes]
        c = RawClient(b.port, clientid, MQTTV311)
        self.assertEqual(c.connect().rc, 0)
        for p in payloads:
            self.assertEqual(c.publish("big/x", p, qos=1), 0)
        c.disconnect()
        evs = [e for e in of(self.sentinel(b), clientid) if e["event"] == "message.publish"]
        self.assertEqual(len(evs), len(payloads))
        return payloads, evs

    def assert_cut(self, ev, payload, limit):
        """ev carries the first limit bytes of payload (all with limit None),
        the full size, and payload_truncated exactly when bytes were left
        out, as the last field."""
        kept = payload if limit is None else payload[:limit]
        self.assertEqual(base64.b64decode(ev["payload"], validate=True), kept)
        self.assertEqual(ev["payload_size"], len(payload))
        if len(kept) < len(payload):
            self.assertIs(ev["payload_truncated"], True)
            self.assertEqual(list(ev)[-3:], ["payload", "payload_size", "payload_truncated"])
        else:
            self.assertNotIn("payload_truncated", ev)
            self.assertEqual(list(ev)[-2:], ["payload", "payload_size"])

    def test_payload_max_bytes_cuts_publish_events(self):
        # The file sink writes plain events, the local sink CloudEvents:
        # both forms carry the cut payload.
        b = self.broker(payload_max_bytes="16", local_topic="$events/{event}/{clientid}",
                        local_format="cloudevents", local_events="message.publish")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe([("$events/message.publish/#", 0)])
        sizes = [0, 5, 16, 17, 70000]
        payloads, evs = self.publish_sizes(b, "cutter", sizes)
        for p, e in zip(payloads, evs):
            with self.subTest(size=len(p), sink="file"):
                self.assert_cut(e, p, 16)
        msgs = viewer.wait_messages(lambda m: len([x for x in m if x.topic.endswith("/cutter")]) >= len(sizes))
        ces = [json.loads(m.payload) for m in msgs if m.topic.endswith("/cutter")]
        self.assertEqual(len(ces), len(sizes))
        for p, ce in zip(payloads, ces):
            with self.subTest(size=len(p), sink="local cloudevents"):
                self.assertEqual(ce["type"], "message.publish")
                self.assert_cut(ce["data"], p, 16)
        viewer.close()
        self.assert_common(read_events(b.events_path))

    def test_payload_max_bytes_zero_keeps_sizes_only(self):
        b = self.broker(payload_max_bytes="0")
        payloads, evs = self.publish_sizes(b, "sizer", [0, 5, 70000])
        for p, e in zip(payloads, evs):
            with self.subTest(size=len(p)):
                self.assertEqual(e["payload"], "")
                self.assert_cut(e, p, 0)

    def test_publish_payload_whole_without_payload_max_bytes(self):
        b = self.broker()
        payloads, evs = self.publish_sizes(b, "whole", [0, 17, 70000])
        for p, e in zip(payloads, evs):
            with self.subTest(size=len(p)):
                self.assert_cut(e, p, None)

    def test_local_sink_topics_escaping_stats_and_no_feedback(self):
        b = self.broker(local_topic="$events/{event}/{clientid}", stats_interval="1")
        viewer = RawClient(b.port, "viewer")
        viewer.connect()
        viewer.subscribe(["$events/#", "$SYS/broker/eventhook/#"])
        c = RawClient(b.port, "a/b+c#d%e")
        c.connect()
        c.disconnect()
        msgs = viewer.wait_messages(lambda m: any(x.topic.startswith("$events/client.disconnected/a")
                                                  for x in m))
        topics = [m.topic for m in msgs if m.topic.startswith("$events/")]
        self.assertIn("$events/client.connected/a%2Fb%2Bc%23d%25e", topics)
        ev = [json.loads(m.payload) for m in msgs if m.topic == "$events/client.connected/a%2Fb%2Bc%23d%25e"][0]
        self.assertEqual(ev["clientid"], "a/b+c#d%e")
        stats = viewer.wait_messages(lambda m: any(x.topic == "$SYS/broker/eventhook/local/delivered"
                                                   for x in m))
        self.assertTrue(any(m.topic == "$SYS/broker/eventhook/file/enqueued" for m in stats))
        evs = self.sentinel(b)
        # the local sink's own publishes never become events
        self.assertFalse([e for e in evs if e["event"] == "message.publish"])
        viewer.close()

    def test_bridge_connection_is_not_a_client(self):
        # A bridge is this broker's own connection to another broker: it
        # has no peer address and never authenticates here. Its messages
        # arriving, its connection lost and its reconnect give no event
        # (2.0.11 used to report a made-up connected/disconnected pair).
        remote = self.start_broker(["allow_anonymous true"], plugin=False)
        b = self.broker(conf=("allow_anonymous true", "connection br",
                              f"address 127.0.0.1:{remote.port}", "local_clientid brlocal",
                              "topic in/# in 1", "restart_timeout 1"))
        sub = RawClient(b.port, "sub")
        self.assertEqual(sub.connect().rc, 0)
        sub.subscribe("in/#", 1)

        def through(tag):
            pub = RawClient(remote.port, "rpub-" + tag)
            pub.connect()
            pub.publish("in/" + tag, tag, qos=1)
            pub.disconnect()
            return any(m.topic == "in/" + tag for m in sub.messages)

        wait_until(lambda: through("a"), interval=0.2, message="a message over the bridge")
        remote.stop()
        remote.start()
        wait_until(lambda: through("b"), interval=0.2, message="a message over the bridge after its reconnect")
        evs = self.sentinel(b)
        self.assertEqual(sorted({e["clientid"] for e in evs}), ["sub", "zz-sentinel"])
        self.assertEqual([e["event"] for e in evs if e["clientid"] == "sub"],
                         ["client.connect", "client.connected", "client.subscribe"])
        sub.close()

    def test_mount_point_long_denied_topic_reported(self):
        # With a listener's mount_point, the topic the broker checks is the
        # mount point plus the client's, which may itself be 65535 bytes.
        b = Broker(["allow_anonymous true", "acl_file {dir}/acl"],
                   plugin_opts={"events": "*", "file_path": "{dir}/events.jsonl"},
                   listeners=[["mount_point mp/"]], start=False, name=self._testMethodName)
        self.add_broker(b)
        with open(b.path("acl"), "w") as f:
            f.write("topic readwrite mp/ok/#\n")
        b.start()
        b.events_path = b.path("events.jsonl")
        c = RawClient(b.port, "mpc", MQTTV5)
        self.assertEqual(c.connect().rc, 0)
        long_topic = "no/" + "L" * 65532
        self.assertEqual(c.publish("ok/1", b"x", 1), 16)  # accepted, no matching subscribers
        self.assertEqual(c.publish(long_topic, b"x", 1), 135)
        self.assertEqual(c.publish("no/1", b"x", 1), 135)
        c.disconnect()
        evs = self.sentinel(b)
        self.assertEqual([(e["event"], e["topic"]) for e in evs
                          if e["clientid"] == "mpc" and e["event"] in ("message.publish", "client.authz_denied")],
                         [("message.publish", "mp/ok/1"), ("client.authz_denied", "mp/" + long_topic),
                          ("client.authz_denied", "mp/no/1")])

    def test_wills_at_stop_are_not_denials_and_real_denials_stay(self):
        # At its stop, 2.0.11 checks the wills of the clients still
        # connected like publishes, after its last TICK: those are no
        # denials. Denials that follow one another (each resolved by the
        # next ACL check) are still reported, in order.
        b = self.broker(conf=("allow_anonymous true", "acl_file {dir}/acl"),
                        files={"acl": "topic readwrite ok/#\n"})
        stayers = []
        for cid, topic in (("w-ok", "ok/will"), ("w-no", "no/will")):
            c = RawClient(b.port, cid)
            self.assertEqual(c.connect(will=Will(topic, b"gone")).rc, 0)
            stayers.append(c)
        d = RawClient(b.port, "denied", MQTTV5)
        self.assertEqual(d.connect().rc, 0)
        self.assertEqual(d.publish("no/1", b"x", 1), 135)
        self.assertEqual(d.publish("no/2", b"x", 1), 135)
        self.assertEqual(d.publish("ok/3", b"x", 1), 16)  # accepted, no matching subscribers
        self.assertEqual(d.publish("no/4", b"x", 1), 135)
        self.sentinel(b)
        self.assertEqual(b.stop(), 0)
        evs = read_events(b.events_path)
        self.assertEqual([(e["clientid"], e["event"], e.get("topic")) for e in evs
                          if e["event"] in ("client.authz_denied", "message.publish")],
                         [("denied", "client.authz_denied", "no/1"), ("denied", "client.authz_denied", "no/2"),
                          ("denied", "message.publish", "ok/3"), ("denied", "client.authz_denied", "no/4")])
        self.assertEqual(sorted(e["clientid"] for e in evs if e["event"] == "client.disconnected"
                                and e["reason"] == "broker_shutdown"), ["denied", "w-no", "w-ok"])
        for c in stayers + [d]:
            c.close()

    def test_local_sink_counts_shutdown_events_left(self):
        # Mosquitto leaves its loop before it calls the plugin's cleanup and
        # never routes a message after that: the broker_shutdown
        # disconnections of the clients still connected cannot reach a
        # subscriber, so they are counted left, not delivered.
        b = self.broker(local_topic="$events/{event}/{clientid}",
                        local_events="client.connected,client.disconnected")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("$events/#")
        stayers = [RawClient(b.port, f"stay{i}") for i in range(3)]
        for c in stayers:
            self.assertEqual(c.connect().rc, 0)
        viewer.wait_messages(lambda m: {x.topic for x in m} >= {f"$events/client.connected/stay{i}"
                                                                 for i in range(3)})
        self.assertEqual(b.stop(), 0)
        self.assertIn("eventhook: local: stopped; enqueued 8, delivered 4, failed 0, dropped 0, "
                      "left undelivered at shutdown 4", b.log())
        self.assertEqual(sum(1 for m in viewer.messages if "client.disconnected" in m.topic), 0)
        # The file sink has them all.
        evs = read_events(b.events_path)
        self.assertEqual(sorted(e["clientid"] for e in evs if e["event"] == "client.disconnected"
                                and e["reason"] == "broker_shutdown"),
                         ["stay0", "stay1", "stay2", "viewer"])
        for c in stayers + [viewer]:
            c.close()

    def test_local_sink_unfit_topics_fail_and_dollar_ids_stay_out_of_sys(self):
        # "{username}/{clientid}" starts with the client id for a client
        # without a user name; "{username}" alone renders empty for it.
        b = self.broker(local_topic="{username}{clientid}/ev", local_events="client.connected")
        viewer = RawClient(b.port, "viewer")
        viewer.connect()
        viewer.subscribe(["#", "$SYS/#"])
        for cid in ["$SYS", "ok"]:
            c = RawClient(b.port, cid)
            self.assertEqual(c.connect().rc, 0)
            c.disconnect()
        msgs = viewer.wait_messages(lambda m: any(x.topic == "ok/ev" for x in m))
        # (the viewer's own event may be published before it subscribed)
        ours = sorted(m.topic for m in msgs if m.topic.endswith("/ev") and m.topic != "viewer/ev")
        self.assertEqual(ours, ["%24SYS/ev", "ok/ev"])
        self.assertEqual(json.loads([m for m in msgs if m.topic == "%24SYS/ev"][0].payload)["clientid"], "$SYS")
        self.sentinel(b)
        # (the file sink has the sentinel's events; the local sink may not
        # have routed its own yet)
        viewer.wait_messages(lambda m: any(x.topic == "zz-sentinel/ev" for x in m))
        viewer.close()
        self.assertEqual(b.stop(), 0)
        m = re.search(r"eventhook: local: stopped; enqueued (\d+), delivered (\d+), failed (\d+)", b.log())
        self.assertEqual(tuple(map(int, m.groups())), (4, 4, 0))

        b = self.broker(local_topic="{username}", local_events="client.connected")
        for cid in ["anon-1", "anon-2"]:
            c = RawClient(b.port, cid)
            self.assertEqual(c.connect().rc, 0)
            c.disconnect()
        self.sentinel(b)
        wait_until(lambda: "the topic for event seq 3 is empty" in b.log(), message="the local sink's third failure")
        self.assertEqual(b.stop(), 0)
        m = re.search(r"eventhook: local: stopped; enqueued (\d+), delivered (\d+), failed (\d+)", b.log())
        self.assertEqual(tuple(map(int, m.groups())), (3, 0, 3))
        self.assertIn("eventhook: local: the topic for event seq 1 is empty; not published", b.log())


    def test_local_sink_batches_and_publishes_events_larger_than_its_outbox_record(self):
        # With local_batch_max, a message's payload is an array of the
        # events in a row that share its topic: together, in the order the
        # file sink has them. An event larger than an outbox record (1 MiB)
        # used to be retried forever, holding back every event after it.
        b = self.broker(local_topic="$events/all", local_batch_max="50", local_batch_bytes="65536")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("$events/#")
        big = bytes(range(256)) * 6000  # 1.5 MB, 2 MB of base64
        clients = [RawClient(b.port, f"dev{i}") for i in range(5)]
        for i, c in enumerate(clients):
            self.assertEqual(c.connect().rc, 0)
            c.publish("t", big if i == 2 else b"small", 1)
        for c in clients:
            c.disconnect()
        evs = self.sentinel(b)
        got = viewer.wait_messages(lambda m: any(e["clientid"] == "zz-sentinel" and e["event"] == "client.disconnected"
                                                 for x in m for e in json.loads(x.payload)))
        self.assertEqual({m.topic for m in got}, {"$events/all"})
        batches = [json.loads(m.payload) for m in got]
        self.assertTrue(all(isinstance(x, list) and 1 <= len(x) <= 50 for x in batches))
        self.assertTrue(all(len(m.payload) <= 65536 for m in got if b'"clientid":"dev2"' not in m.payload
                            or b'"message.publish"' not in m.payload))
        flat = [e for x in batches for e in x]
        start = next(i for i, e in enumerate(evs) if e["seq"] == flat[0]["seq"])
        self.assertEqual([(e["event"], e["clientid"], e["seq"]) for e in flat],
                         [(e["event"], e["clientid"], e["seq"]) for e in evs[start:]])
        bigs = [e for e in flat if e["event"] == "message.publish" and e["clientid"] == "dev2"]
        self.assertEqual(base64.b64decode(bigs[0]["payload"]), big)
        viewer.close()
        self.assertEqual(b.stop(), 0)
        m = re.search(r"eventhook: local: stopped; enqueued (\d+), delivered (\d+), failed (\d+), dropped (\d+), "
                      r"left undelivered at shutdown (\d+)", b.log())
        enqueued, delivered, failed, dropped, left = map(int, m.groups())
        # (the viewer's own disconnection may be left at the stop)
        self.assertEqual((failed, dropped, delivered + left), (0, 0, enqueued))
        self.assertGreaterEqual(delivered, len(evs))


    def test_local_sink_fails_an_event_no_mqtt_packet_can_carry(self):
        # A 201.4 MB publish is an event of about 268.6 MB of JSON: the
        # broker would take such a message but could never send it, and it
        # would hold back every later message to each subscriber.
        b = self.broker(local_topic="$events/{event}", local_events="message.publish", queue_bytes=str(1 << 30),
                        file_events="client.connected,client.disconnected")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("$events/#")
        c = RawClient(b.port, "pub")
        self.assertEqual(c.connect().rc, 0)
        c.publish("t/a", b"a")
        c.publish("t/huge", b"\0" * 201_400_000)
        c.publish("t/b", b"b")
        c.disconnect()
        c = RawClient(b.port, "pub2")
        self.assertEqual(c.connect().rc, 0)
        c.publish("t/c", b"c")
        c.disconnect()
        got = viewer.wait_messages(3, timeout=TIMEOUT * 3)
        self.assertEqual([json.loads(m.payload)["topic"] for m in got], ["t/a", "t/b", "t/c"])
        self.assertEqual(b.stop(), 0)
        self.assertRegex(b.log(), r"eventhook: local: event seq 2 would be a message of 2685\d{5} bytes, more than "
                                  r"an MQTT packet can carry; not published")
        m = re.search(r"eventhook: local: stopped; enqueued (\d+), delivered (\d+), failed (\d+), dropped (\d+), "
                      r"left undelivered at shutdown (\d+)", b.log())
        enqueued, delivered, failed, dropped, left = map(int, m.groups())
        self.assertEqual((enqueued, failed, dropped, delivered + left), (4, 1, 0, 3))
        viewer.close()

    def test_local_sink_batch_waits_for_batch_max_events_within_its_linger(self):
        b = self.broker(local_topic="$events/all", local_batch_max="5", local_batch_linger_ms="60000",
                        local_events="client.connected,client.disconnected")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("$events/#")
        for cid in ("c1", "c2"):
            c = RawClient(b.port, cid)
            self.assertEqual(c.connect().rc, 0)
            c.disconnect()
        got = viewer.wait_messages(1)
        self.assertEqual([(e["event"], e["clientid"]) for e in json.loads(got[0].payload)],
                         [("client.connected", "viewer"), ("client.connected", "c1"),
                          ("client.disconnected", "c1"), ("client.connected", "c2"),
                          ("client.disconnected", "c2")])
        viewer.close()


class ConfigErrorsTest(BrokerTestCase):
    def run_bad(self, opts):
        b = Broker(["allow_anonymous true"], start=False, plugin_opts=opts, name="bad")
        self.add_broker(b)
        b.write_config()
        try:
            env = dict(os.environ)
            if os.environ.get("EH_BROKER_PRELOAD"):
                env["LD_PRELOAD"] = os.environ["EH_BROKER_PRELOAD"]
            proc = subprocess.run([b_mosq(), "-c", str(b.conf_path)], capture_output=True, text=True,
                                  timeout=TIMEOUT, env=env)
        except subprocess.TimeoutExpired:
            self.fail(f"broker started with bad options {opts}")
        return proc.returncode, b.log() + proc.stdout + proc.stderr

    def test_bad_options_stop_the_broker_naming_the_key(self):
        cases = [
            ([("file_path", "/tmp/x.jsonl"), ("no_such_option", "1")], "plugin_opt_no_such_option"),
            ([("file_path", "/tmp/x.jsonl"), ("file_path", "/tmp/y.jsonl")], "given more than once"),
            ([("file_path", "/tmp/x.jsonl"), ("queue_size", "12x")], "plugin_opt_queue_size"),
            ([("file_path", "/tmp/x.jsonl"), ("queue_size", "1")], "plugin_opt_queue_size"),
            ([("file_path", "/tmp/x.jsonl"), ("events", "client.nope")], "plugin_opt_events"),
            ([("file_path", "/tmp/x.jsonl"), ("topics", "a/#/b")], "plugin_opt_topics"),
            ([("file_path", "/tmp/x.jsonl"), ("node_id", "n" * 256)], "plugin_opt_node_id: longer than 255 bytes"),
            ([("file_path", "/tmp/x.jsonl"), ("node_id", "bad\udcff")],
             "plugin_opt_node_id: not valid UTF-8 (at byte 3)"),
            ([("local_topic", "$e/{nope}")], "plugin_opt_local_topic"),
            ([("local_topic", "ev/#/{event}")],
             "plugin_opt_local_topic: 'ev/#/{event}' holds '#'; an MQTT topic name may hold no wildcard"),
            ([("local_topic", "ev/+/{event}")], "plugin_opt_local_topic: 'ev/+/{event}' holds '+'"),
            ([("local_topic", "ev/\udcff\udcfe/{event}")],
             "plugin_opt_local_topic: the template is not valid UTF-8"),
            ([("file_path", "/nonexistent-dir/x.jsonl")], "plugin_opt_file_path"),
            ([("file_fsync", "maybe"), ("file_path", "/tmp/x.jsonl")], "plugin_opt_file_fsync"),
            ([("local_qos", "1")], "plugin_opt_local_qos is set but the local sink is not enabled"),
            ([("file_path", "/tmp/x.jsonl"), ("kafka.acks", "all")],
             "plugin_opt_kafka.acks is set but the kafka sink is not enabled"),
        ]
        for opts, needle in cases:
            with self.subTest(opts=opts):
                rc, text = self.run_bad(opts)
                self.assertNotEqual(rc, 0)
                self.assertIn(needle, text)

    def test_bad_payload_max_bytes_stops_the_broker(self):
        # (an empty value never reaches the plugin: mosquitto refuses it itself)
        for value in ["-1", "abc", "268435456", "1.5"]:
            with self.subTest(value=value):
                rc, text = self.run_bad([("file_path", "/tmp/x.jsonl"), ("payload_max_bytes", value)])
                self.assertNotEqual(rc, 0)
                self.assertIn(f"plugin_opt_payload_max_bytes: '{value}' is not a whole number from 0 to "
                              "268435455", text)


def b_mosq():
    from eh_harness import MOSQUITTO
    return MOSQUITTO


if __name__ == "__main__":
    unittest.main()
