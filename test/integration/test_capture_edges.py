"""Events where Mosquitto 2.0.11's callbacks alone are ambiguous: what the
plugin reports after a SIGHUP on a broker that never calls TICK
(per_listener_settings true).

Each test drives real clients against Debian's broker and asserts the exact
events of each client, in order; a sentinel client's disconnect, written
after every event of the scenario, proves nothing more came.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import (Broker, BrokerTestCase, RawClient, wait_events,  # noqa: E402
                        write_password_file)


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
                       files=[lambda b: write_password_file(b.path("pw"), {"alice": "secret"})],
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
        wait_events(b.path("events.jsonl"), lambda evs: kinds(of(evs, "dur"))[-1:] == ["client.disconnected"])

        b.sighup()

        ok = RawClient(b.port, "ok")
        self.assertEqual(ok.connect(username="alice", password="secret").rc, 0)
        ok.subscribe("x/#", 0)
        self.assertEqual(ok.publish("x/1", b"hi", 1), 0)
        ok.disconnect()
        bad = RawClient(b.port, "bad")
        self.assertEqual(bad.connect(username="alice", password="wrong").rc, 5)
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
        self.assertEqual(kinds(of(evs, "live")), ["client.connect", "client.connected", "client.subscribe",
                                                  "client.disconnected"])


if __name__ == "__main__":
    unittest.main()
