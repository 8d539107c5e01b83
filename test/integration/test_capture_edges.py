"""Events where Mosquitto 2.0.11's callbacks alone are ambiguous: what the
plugin reports after a SIGHUP on a broker that never calls TICK
(per_listener_settings true), for publishes to $CONTROL/ topics, and when a
dynamic-security command kicks a client.

Each test drives real clients against Debian's broker and asserts the exact
events of each client, in order; a sentinel client's disconnect, written
after every event of the scenario, proves nothing more came.
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import (DYNSEC_PLUGIN, MQTTV5, MQTTV311, Broker, BrokerTestCase,  # noqa: E402
                        RawClient, Will, wait_events, write_password_file)
from test_transparency import write_dynsec  # noqa: E402


def of(events, clientid):
    return [e for e in events if e.get("clientid") == clientid]


def kinds(events):
    return [e["event"] for e in events]


class CaptureEdgesTest(BrokerTestCase):
    def start(self, conf, files=(), **kwargs):
        b = Broker(conf, start=False, name=self._testMethodName,
                   plugin_opts={"events": "*", "file_path": "{dir}/events.jsonl"}, **kwargs)
        self.add_broker(b)
        for write in files:
            write(b)
        b.start()
        return b

    def events_until_sentinel(self, b, **login):
        c = RawClient(b.port, "zz-sentinel")
        self.assertEqual(c.connect(**login).rc, 0)
        c.disconnect()
        return wait_events(b.path("events.jsonl"), lambda evs: any(
            e["event"] == "client.disconnected" and e["clientid"] == "zz-sentinel" for e in evs))

    def test_per_listener_sighup_keeps_every_event(self):
        """Mosquitto 2.0.11 never calls TICK with per_listener_settings: the
        reload's re-checks must still end, so that what clients do after it
        is reported as before it."""
        b = self.start(["per_listener_settings true"],
                       files=[lambda b: write_password_file(b.path("pw"), {"alice": "secret", "gone": "pw"})],
                       listeners=[["allow_anonymous true", "password_file {dir}/pw"]])
        # Before the SIGHUP: a connected client, and a durable session that
        # goes offline; both are re-checked by the reload.
        live = RawClient(b.port, "live")
        self.assertEqual(live.connect(username="alice", password="secret").rc, 0)
        live.subscribe("l/#", 0)
        dur = RawClient(b.port, "dur")
        self.assertEqual(dur.connect(username="alice", password="secret", clean=False).rc, 0)
        dur.subscribe("d/#", 1)
        dur.disconnect()
        # A durable session whose user the reload removes: its re-check
        # fails, and it was not connected.
        gone = RawClient(b.port, "gone")
        self.assertEqual(gone.connect(username="gone", password="pw", clean=False).rc, 0)
        gone.subscribe("g/#", 1)
        gone.disconnect()
        wait_events(b.path("events.jsonl"), lambda evs: kinds(of(evs, "gone"))[-1:] == ["client.disconnected"])
        write_password_file(b.path("pw"), {"alice": "secret"})

        b.sighup()

        ok = RawClient(b.port, "ok")
        self.assertEqual(ok.connect(username="alice", password="secret").rc, 0)
        ok.subscribe("x/#", 0)
        self.assertEqual(ok.publish("x/1", b"hi", 1), 0)
        ok.disconnect()
        bad = RawClient(b.port, "bad")
        self.assertEqual(bad.connect(username="alice", password="wrong").rc, 5)
        # MQTT 5 clients may be offline sessions until they act.
        bad5 = RawClient(b.port, "bad5", MQTTV5)
        self.assertEqual(bad5.connect(username="alice", password="wrong").rc, 135)
        ok5 = RawClient(b.port, "ok5", MQTTV5)
        self.assertEqual(ok5.connect(username="alice", password="secret").rc, 0)
        ok5.subscribe("y/#", 1)
        ok5.disconnect()
        back = RawClient(b.port, "dur")
        ack = back.connect(username="alice", password="secret", clean=False)
        self.assertEqual((ack.rc, ack.session_present), (0, True))
        back.subscribe("d2/#", 0)
        back.disconnect()
        live.disconnect()
        evs = self.events_until_sentinel(b, username="alice", password="secret")

        self.assertEqual(kinds(of(evs, "ok")), ["client.connect", "client.connected", "client.subscribe",
                                                "message.publish", "client.disconnected"])
        self.assertEqual(of(evs, "ok")[3]["topic"], "x/1")
        self.assertEqual(kinds(of(evs, "bad")), ["client.connect", "client.connect_failed"])
        self.assertEqual(of(evs, "bad")[1]["reason"], "not_authorized")
        self.assertEqual(kinds(of(evs, "dur")), [
            "client.connect", "client.connected", "client.subscribe", "client.disconnected",
            "client.connect", "client.connected", "client.subscribe", "client.disconnected"])
        self.assertEqual([e.get("topic") for e in of(evs, "dur") if e["event"] == "client.subscribe"],
                         ["d/#", "d2/#"])
        self.assertFalse(of(evs, "dur")[4]["clean_start"])
        self.assertEqual(kinds(of(evs, "bad5")), ["client.connect", "client.connect_failed"])
        self.assertEqual((of(evs, "bad5")[0]["proto_ver"], of(evs, "bad5")[1]["reason"]), (5, "not_authorized"))
        self.assertEqual(kinds(of(evs, "ok5")), ["client.connect", "client.connected", "client.subscribe",
                                                 "client.disconnected"])
        self.assertEqual(kinds(of(evs, "gone")), ["client.connect", "client.connected", "client.subscribe",
                                                  "client.disconnected"])
        self.assertEqual(kinds(of(evs, "live")), ["client.connect", "client.connected", "client.subscribe",
                                                  "client.disconnected"])

    def per_listener_broker(self, *conf):
        return self.start(["per_listener_settings true", *conf],
                          files=[lambda b: write_password_file(b.path("pw"), {"alice": "secret"})],
                          listeners=[["allow_anonymous true", "password_file {dir}/pw"]])

    def test_takeover_after_sighup_without_tick(self):
        """A takeover of a connection first seen after the SIGHUP, before any
        other event: the old connection's will is no denied publish, and its
        disconnect is a takeover."""
        b = self.per_listener_broker()
        b.sighup()
        time.sleep(0.5)
        first = RawClient(b.port, "tk", MQTTV5)
        self.assertEqual(first.connect(username="alice", password="secret", will=Will("will/tk", b"x")).rc, 0)
        second = RawClient(b.port, "tk", MQTTV5)
        self.assertEqual(second.connect(username="alice", password="secret").rc, 0)
        self.assertTrue(first.wait_closed())
        second.subscribe("s/#", 0)
        second.disconnect()
        evs = self.events_until_sentinel(b, username="alice", password="secret")
        self.assertEqual([(e["event"], e.get("reason")) for e in of(evs, "tk")], [
            ("client.connect", None), ("client.connected", None), ("client.disconnected", "session_taken_over"),
            ("client.connect", None), ("client.connected", None), ("client.subscribe", None),
            ("client.disconnected", "normal_disconnection" if b.capture_21() else "unknown")])

    def test_keepalive_after_sighup_without_tick(self):
        """A client first seen after the SIGHUP, before any other event, is
        reported with the keepalive the broker applies."""
        b = self.per_listener_broker("max_keepalive 30")
        b.sighup()
        time.sleep(0.5)
        c = RawClient(b.port, "ka", MQTTV5)
        ack = c.connect(username="alice", password="secret", keepalive=600)
        self.assertEqual(ack.properties.get("server_keep_alive"), 30)
        c.subscribe("s/#", 0)
        c.disconnect()
        evs = self.events_until_sentinel(b, username="alice", password="secret")
        self.assertEqual([(e["event"], e.get("keepalive")) for e in of(evs, "ka")], [
            ("client.connect", 30), ("client.connected", 30), ("client.subscribe", None),
            ("client.disconnected", None)])

    def test_refusal_in_freed_offline_memory_after_sighup(self):
        """After a SIGHUP without TICK, a refused connection in the memory the
        broker freed for a session we saw go offline is still a refusal."""
        b = self.per_listener_broker()
        for i in range(20):
            a = RawClient(b.port, "p5-%d" % i, MQTTV5)
            self.assertEqual(a.connect(username="alice", password="secret").rc, 0)
            a.subscribe("s/#", 0)
            a.disconnect()
            time.sleep(0.02)
        hold = []
        for i in range(3):
            h = RawClient(b.port, "h5-%d" % i, MQTTV5)
            self.assertEqual(h.connect(username="alice", password="secret").rc, 0)
            h.subscribe("s/#", 0)
            hold.append(h)
        time.sleep(0.3)
        b.sighup()
        time.sleep(0.5)
        for h in hold:
            h.disconnect()
        time.sleep(0.2)
        for _ in range(3):
            bad = RawClient(b.port, "bad", MQTTV311)
            self.assertEqual(bad.connect(username="alice", password="wrong").rc, 5)
            time.sleep(0.05)
        time.sleep(0.1)
        ok = RawClient(b.port, "ok", MQTTV311)
        self.assertEqual(ok.connect(username="alice", password="secret").rc, 0)
        ok.subscribe("s/#", 0)
        ok.disconnect()
        evs = self.events_until_sentinel(b, username="alice", password="secret")
        self.assertEqual(kinds(of(evs, "bad")), ["client.connect", "client.connect_failed"] * 3)
        self.assertEqual(kinds(of(evs, "ok")), ["client.connect", "client.connected", "client.subscribe",
                                                "client.disconnected"])
        for i in range(3):
            self.assertEqual(kinds(of(evs, "h5-%d" % i)), ["client.connect", "client.connected",
                                                          "client.subscribe", "client.disconnected"])

    def test_delayed_will_of_session_first_seen_at_recheck(self):
        """An offline session first seen at a reload's re-checks (its
        connection, after an earlier SIGHUP, closed with nothing in between)
        makes no client of its delayed will."""
        b = self.per_listener_broker()
        watch = RawClient(b.port, "watch")
        self.assertEqual(watch.connect(username="alice", password="secret").rc, 0)
        watch.subscribe("will/#", 0)
        b.sighup()
        time.sleep(0.5)
        dw = RawClient(b.port, "dw", MQTTV5)
        will = Will("will/dw", b"gone", 0, False, {"will_delay_interval": 2})
        self.assertEqual(dw.connect(username="alice", password="secret", will=will, session_expiry=60).rc, 0)
        dw.drop()
        b.sighup()
        self.assertEqual([m.topic for m in watch.wait_messages(1)], ["will/dw"])
        watch.disconnect()
        evs = self.events_until_sentinel(b, username="alice", password="secret")
        self.assertEqual(kinds(of(evs, "dw")), [])
        self.assertEqual(kinds(of(evs, "watch")), ["client.connect", "client.connected", "client.subscribe",
                                                   "client.disconnected"])

    def dynsec_broker(self):
        return self.start(["allow_anonymous false"],
                          files=[lambda b: write_dynsec(b.dir / "dynsec.json")],
                          extra_plugins_after=[(DYNSEC_PLUGIN, {"config_file": "{dir}/dynsec.json"})])

    def test_dynsec_command_and_kick(self):
        """An accepted dynamic-security command is no authorization denial,
        and the kick it causes re-checks the kicked client's subscriptions
        without that client subscribing."""
        b = self.dynsec_broker()
        admin = RawClient(b.port, "admin", MQTTV5)
        self.assertEqual(admin.connect(username="bob", password="bobpw").rc, 0)
        admin.subscribe("$CONTROL/dynamic-security/v1/response", 1)
        watch = RawClient(b.port, "watch")
        self.assertEqual(watch.connect(username="bob", password="bobpw").rc, 0)
        watch.subscribe("w/1", 0)
        alice = RawClient(b.port, "alice-d")
        self.assertEqual(alice.connect(username="alice", password="alicepw", clean=False).rc, 0)
        self.assertEqual(alice.subscribe([("pub/k/#", 1), ("ro/k/#", 1), ("secret/x", 1)]), [1, 1, 128])
        # alice may not publish to the control topic, nor to secret/#: the
        # first denial cannot be told from an accepted command, the second is
        # reported.
        alice2 = RawClient(b.port, "alice-5", MQTTV5)
        self.assertEqual(alice2.connect(username="alice", password="alicepw").rc, 0)
        self.assertEqual(alice2.publish("$CONTROL/dynamic-security/v1", b"{}", 1), 135)
        self.assertEqual(alice2.publish("secret/x", b"no", 1), 135)
        alice2.disconnect()

        command = {"commands": [{"command": "disableClient", "username": "alice"}]}
        self.assertEqual(admin.publish("$CONTROL/dynamic-security/v1", json.dumps(command), 1), 0)
        reply = admin.wait_messages(1)[0]
        self.assertEqual(json.loads(reply.payload), {"responses": [{"command": "disableClient"}]})
        self.assertTrue(alice.wait_closed())
        # A real subscribe at qos 0, by a client that has subscriptions,
        # right after the command: reported.
        watch.subscribe("w/2", 0)
        watch.disconnect()
        admin.disconnect()
        evs = self.events_until_sentinel(b, username="bob", password="bobpw")

        self.assertEqual(kinds(of(evs, "admin")), ["client.connect", "client.connected", "client.subscribe",
                                                   "client.disconnected"])
        alice_evs = of(evs, "alice-d")
        # The denied filter: on 2.0 dynsec leaves the outcome unknown; 2.1
        # says it.
        denied = "client.authz_denied" if b.capture_21() else "client.subscribe"
        self.assertEqual(kinds(alice_evs), ["client.connect", "client.connected"] + ["client.subscribe"] * 2
                         + [denied, "client.disconnected"])
        self.assertEqual([(e["topic"], e["qos"]) for e in alice_evs[2:5]],
                         [("pub/k/#", 1), ("ro/k/#", 1), ("secret/x", 1)])
        self.assertEqual([(e["event"], e.get("topic")) for e in of(evs, "alice-5")], [
            ("client.connect", None), ("client.connected", None), ("client.authz_denied", "secret/x"),
            ("client.disconnected", None)])
        self.assertEqual([(e["event"], e.get("topic")) for e in of(evs, "watch")], [
            ("client.connect", None), ("client.connected", None), ("client.subscribe", "w/1"),
            ("client.subscribe", "w/2"), ("client.disconnected", None)])

    def dynsec_command(self, admin, command):
        admin.take_messages()
        self.assertEqual(admin.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [command]}), 1), 0)
        reply = json.loads(admin.wait_messages(1)[0].payload)["responses"][0]
        self.assertEqual((reply["command"], reply.get("error")), (command["command"], None))

    def test_subscribes_after_a_kicking_command_are_exact(self):
        """A command that kicks clients makes the broker re-check every
        subscription of each kicked durable session (Debian's dynsec kicks
        while the broker handles the command, 2.1's from its next TICK):
        those checks are neither subscribes nor denials. Subscribes at qos 0
        by clients that have subscriptions, after a command, are reported as
        the broker answered them. (Run against 2.1 with EH_DYNSEC_PLUGIN set
        to its own dynsec too.)"""
        b = self.dynsec_broker()
        v21 = b.capture_21()
        admin = RawClient(b.port, "admin", MQTTV5)
        self.assertEqual(admin.connect(username="bob", password="bobpw").rc, 0)
        self.assertEqual(admin.subscribe("$CONTROL/dynamic-security/v1/response", 1), [1])
        watch = RawClient(b.port, "watch")
        self.assertEqual(watch.connect(username="bob", password="bobpw").rc, 0)
        self.assertEqual(watch.subscribe("w/1", 0), [0])
        kicked = []
        for cid, proto, expiry in (("kicked-4", MQTTV311, None), ("kicked-5", MQTTV5, 60)):
            c = RawClient(b.port, cid, proto)
            self.assertEqual(c.connect(username="alice", password="alicepw", clean=expiry is not None,
                                       session_expiry=expiry).rc, 0)
            self.assertEqual(c.subscribe([("pub/k/#", 0), ("ro/k/#", 0)]), [0, 0])
            kicked.append(c)
        self.dynsec_command(admin, {"command": "disableClient", "username": "alice"})
        for c in kicked:
            self.assertTrue(c.wait_closed())
        self.assertEqual(watch.subscribe("w/2", 0), [0])
        self.dynsec_command(admin, {"command": "enableClient", "username": "alice"})
        alice = RawClient(b.port, "alice-s")
        self.assertEqual(alice.connect(username="alice", password="alicepw").rc, 0)
        self.assertEqual(alice.subscribe("pub/s", 0), [0])
        self.dynsec_command(admin, {"command": "listClients"})
        self.assertEqual(alice.subscribe([("pub/t", 0), ("secret/t", 0)]), [0, 128])
        for c in (alice, watch, admin):
            c.disconnect()
        evs = self.events_until_sentinel(b, username="bob", password="bobpw")

        for cid in ("kicked-4", "kicked-5"):
            self.assertEqual([(e["event"], e.get("topic"), e.get("reason")) for e in of(evs, cid)], [
                ("client.connect", None, None), ("client.connected", None, None),
                ("client.subscribe", "pub/k/#", None), ("client.subscribe", "ro/k/#", None),
                ("client.disconnected", None, "administrative_action" if v21 else "unknown")], cid)
        self.assertEqual([(e["event"], e.get("topic")) for e in of(evs, "watch")], [
            ("client.connect", None), ("client.connected", None), ("client.subscribe", "w/1"),
            ("client.subscribe", "w/2"), ("client.disconnected", None)])
        # On 2.0 dynsec leaves a filter's outcome unknown: the denied one is a
        # client.subscribe without "granted"; 2.1 reports the denial.
        self.assertEqual([(e["event"], e.get("topic"), e.get("action"), e.get("granted")) for e in of(evs, "alice-s")], [
            ("client.connect", None, None, None), ("client.connected", None, None, None),
            ("client.subscribe", "pub/s", None, True if v21 else None),
            ("client.subscribe", "pub/t", None, True if v21 else None),
            ("client.authz_denied", "secret/t", "subscribe", None) if v21
            else ("client.subscribe", "secret/t", None, None),
            ("client.disconnected", None, None, None)])

    def test_control_topic_without_dynsec(self):
        """With no plugin handling $CONTROL/, the broker accepts the publish
        (PUBACK 0) and fires no message event: nothing is reported."""
        b = self.start(["allow_anonymous true"])
        c = RawClient(b.port, "ctl", MQTTV5)
        self.assertEqual(c.connect().rc, 0)
        self.assertEqual(c.publish("$CONTROL/foo/v1", b"x", 1), 0)
        self.assertEqual(c.publish("plain/t", b"y", 1), 16)  # no matching subscribers
        c.disconnect()
        evs = self.events_until_sentinel(b)
        self.assertEqual([(e["event"], e.get("topic")) for e in of(evs, "ctl")], [
            ("client.connect", None), ("client.connected", None), ("message.publish", "plain/t"),
            ("client.disconnected", None)])


if __name__ == "__main__":
    unittest.main()
