"""Tests of eh_harness itself: the packet codec, ports, the broker wrapper,
both clients, the event-file readers and the failure dump.

These run against plugin-free brokers only, so a broken harness shows up
here rather than as a confusing failure in a plugin test.
"""

import contextlib
import io
import os
import socket
import tempfile
import unittest
from pathlib import Path

import eh_harness as h
from eh_harness import (MQTTV311, MQTTV5, Broker, BrokerError, BrokerTestCase, Client,
                        Collector, Message, MqttTimeout, RawClient, Will, barrier)


class CodecTest(unittest.TestCase):
    def test_varint_boundaries(self):
        for value, size in ((0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3),
                            (2097151, 3), (2097152, 4), (268435455, 4)):
            data = h.encode_varint(value)
            self.assertEqual(len(data), size, value)
            self.assertEqual(h.decode_varint(data + b"tail"), (value, size))
            # A truncated integer is "not yet complete", not an error.
            self.assertIsNone(h.decode_varint(data[:-1]))
        with self.assertRaises(h.ProtocolError):
            h.encode_varint(268435456)
        with self.assertRaises(h.ProtocolError):
            h.decode_varint(b"\xff\xff\xff\xff\x01")

    def test_connect_matches_spec_bytes(self):
        # MQTT 3.1.1 section 3.1: CONNECT "MQTT" level 4, clean session,
        # keepalive 60, client id "c".
        self.assertEqual(h.encode_connect("c", MQTTV311, True, 60),
                         b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c")
        self.assertEqual(h.encode_pingreq(), b"\xc0\x00")
        self.assertEqual(h.encode_disconnect(), b"\xe0\x00")

    def _split(self, data):
        ptype, flags, body, used = h.decode_packet(data)
        self.assertEqual(used, len(data))
        # Every strict prefix is reported as incomplete.
        for cut in range(len(data)):
            self.assertIsNone(h.decode_packet(data[:cut]))
        return ptype, flags, body

    def test_connect_round_trip(self):
        will = Will("w/t", b"bye", 2, True, {"will_delay_interval": 5})
        for proto in (MQTTV311, MQTTV5):
            props = {"session_expiry_interval": 30, "user_property": [("k", "v"), ("k", "w")]}
            data = h.encode_connect("cid", proto, False, 15, "user", "pw",
                                    will if proto == MQTTV5 else will._replace(properties=None),
                                    props if proto == MQTTV5 else None)
            ptype, flags, body = self._split(data)
            self.assertEqual(ptype, h.CONNECT)
            got = h.decode_connect(body)
            self.assertEqual(got["protocol"], proto)
            self.assertEqual((got["client_id"], got["clean"], got["keepalive"]), ("cid", False, 15))
            self.assertEqual((got["username"], got["password"]), ("user", b"pw"))
            self.assertEqual(got["will"].topic, "w/t")
            self.assertEqual((got["will"].payload, got["will"].qos, got["will"].retain), (b"bye", 2, True))
            if proto == MQTTV5:
                self.assertEqual(got["properties"], props)
                self.assertEqual(got["will"].properties, {"will_delay_interval": 5})
        ptype, _, body = self._split(h.encode_connect("", MQTTV5, password="only"))
        got = h.decode_connect(body)
        self.assertEqual((got["username"], got["password"], got["will"]), (None, b"only", None))

    def test_connack_round_trip(self):
        for proto, props in ((MQTTV311, {}), (MQTTV5, {"assigned_client_identifier": "x",
                                                       "receive_maximum": 10})):
            ptype, _, body = self._split(h.encode_connack(135 if proto == MQTTV5 else 5, True,
                                                          proto, props))
            self.assertEqual(ptype, h.CONNACK)
            ack = h.decode_connack(body, proto)
            self.assertEqual((ack.rc, ack.session_present, ack.properties),
                             (135 if proto == MQTTV5 else 5, True, props))

    def test_publish_round_trip(self):
        for proto in (MQTTV311, MQTTV5):
            for qos in (0, 1, 2):
                props = {"subscription_identifier": [3, 70000], "content_type": "t"} \
                    if proto == MQTTV5 else {}
                data = h.encode_publish("a/b", b"\x00payload", qos, qos == 1,
                                        mid=qos and 513, dup=qos == 2, protocol=proto,
                                        properties=props)
                ptype, flags, body = self._split(data)
                self.assertEqual(ptype, h.PUBLISH)
                pub = h.decode_publish(flags, body, proto)
                self.assertEqual(pub, h.Publish("a/b", b"\x00payload", qos, qos == 1, qos == 2,
                                                qos and 513 or None, props))
                self.assertEqual(pub.message(), Message("a/b", b"\x00payload", qos, qos == 1))
        with self.assertRaises(h.ProtocolError):
            h.encode_publish("a", b"", 1)  # QoS 1 needs a packet id

    def test_acks_round_trip(self):
        for ptype in (h.PUBACK, h.PUBREC, h.PUBREL, h.PUBCOMP):
            got_type, flags, body = self._split(h.encode_ack(ptype, 7))
            self.assertEqual((got_type, flags), (ptype, 2 if ptype == h.PUBREL else 0))
            self.assertEqual(h.decode_ack(body, MQTTV311), (7, 0, {}))
            _, _, body = self._split(h.encode_ack(ptype, 9, 0x87, MQTTV5, {"reason_string": "no"}))
            self.assertEqual(h.decode_ack(body, MQTTV5), (9, 0x87, {"reason_string": "no"}))
            # MQTT 5 brokers omit a success code: still reads as 0.
            _, _, body = self._split(h.encode_ack(ptype, 9, 0, MQTTV5))
            self.assertEqual(len(body), 2)
            self.assertEqual(h.decode_ack(body, MQTTV5), (9, 0, {}))

    def test_subscribe_unsubscribe_round_trip(self):
        subs = [("a/#", 1), ("$share/g/b", 2 | 4 | 8 | 16)]
        for proto in (MQTTV311, MQTTV5):
            props = {"subscription_identifier": [12]} if proto == MQTTV5 else {}
            ptype, flags, body = self._split(h.encode_subscribe(300, subs, proto, props))
            self.assertEqual((ptype, flags), (h.SUBSCRIBE, 2))
            self.assertEqual(h.decode_subscribe(body, proto), (300, subs, props))
            _, _, body = self._split(h.encode_suback(300, [1, 0x80], proto))
            self.assertEqual(h.decode_suback(body, proto), (300, [1, 0x80], {}))
            ptype, flags, body = self._split(h.encode_unsubscribe(301, ["a/#", "b"], proto))
            self.assertEqual((ptype, flags), (h.UNSUBSCRIBE, 2))
            self.assertEqual(h.decode_unsubscribe(body, proto), (301, ["a/#", "b"], {}))
            _, _, body = self._split(h.encode_unsuback(301, [0, 0x87], proto))
            self.assertEqual(h.decode_unsuback(body, proto),
                             (301, [0, 0x87] if proto == MQTTV5 else [], {}))

    def test_disconnect_and_properties(self):
        _, _, body = self._split(h.encode_disconnect(0x04, MQTTV5, {"session_expiry_interval": 0}))
        self.assertEqual(h.decode_disconnect(body, MQTTV5), (0x04, {"session_expiry_interval": 0}))
        props = {"payload_format_indicator": 1, "message_expiry_interval": 2 ** 32 - 1,
                 "correlation_data": b"\x00\x01", "topic_alias": 65535,
                 "user_property": [("a", "b")], "subscription_identifier": [268435455]}
        self.assertEqual(h.decode_properties(h.encode_properties(props)), props)
        with self.assertRaises(h.ProtocolError):
            h.encode_properties({"no_such_property": 1})

    def test_packets_split_from_a_stream(self):
        stream = h.encode_pingreq() + h.encode_publish("t", b"x" * 300, 1, mid=1) + b"\x30"
        first = h.decode_packet(stream)
        self.assertEqual(first[0], h.PINGREQ)
        second = h.decode_packet(stream[first[3]:])
        self.assertEqual((second[0], len(second[2])), (h.PUBLISH, 2 + 1 + 2 + 300))
        self.assertIsNone(h.decode_packet(stream[first[3] + second[3]:]))


class HelpersTest(unittest.TestCase):
    def test_free_port_is_bindable(self):
        port = h.free_port()
        self.assertTrue(1024 <= port <= 65535)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    def test_wait_until(self):
        calls = []
        self.assertEqual(h.wait_until(lambda: calls.append(1) or len(calls) >= 3 and "done"), "done")
        with self.assertRaises(MqttTimeout):
            h.wait_until(lambda: False, timeout=0.05, message="never")

    def test_read_and_wait_events(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "events.jsonl")
            self.assertEqual(h.read_events(path), [])
            path.write_text('{"event": "a"}\n\n{"event": "b"}\n{"event": "c", "unfini')
            # The unterminated last line is being written: not an event yet.
            self.assertEqual(h.read_events(path), [{"event": "a"}, {"event": "b"}])
            got = h.wait_events(path, lambda evs: len(evs) == 2, timeout=5)
            self.assertEqual([e["event"] for e in got], ["a", "b"])
            with self.assertRaisesRegex(AssertionError, "2 events"):
                h.wait_events(path, lambda evs: len(evs) > 2, timeout=0.05)

    def test_plugin_path_and_skip(self):
        old = os.environ.get("EH_PLUGIN")
        try:
            os.environ["EH_PLUGIN"] = "/nonexistent/plugin.so"
            self.assertEqual(h.plugin_path(), "/nonexistent/plugin.so")
            with self.assertRaises(unittest.SkipTest):
                h.require_plugin()
            with self.assertRaises(unittest.SkipTest):
                Broker(plugin=True, start=False)
        finally:
            if old is None:
                os.environ.pop("EH_PLUGIN", None)
            else:
                os.environ["EH_PLUGIN"] = old

    def test_config_text(self):
        # Any existing file serves as plugin path: the broker is not started.
        so = h.DYNSEC_PLUGIN
        b = Broker(["per_listener_settings true", "# {port1} {dir}"], plugin=True,
                   plugin_path=so, plugin_opts=[("file_path", "{dir}/e.jsonl"), ("events", "*")],
                   extra_plugins_before=[(so, {"config_file": "/x/d.json"})],
                   listeners=[["allow_anonymous true"], ["allow_anonymous false"]],
                   start=False)
        try:
            lines = b.config_text().splitlines()
            self.assertIn("user root", lines)
            self.assertIn(f"log_dest file {b.log_path}", lines)
            self.assertIn("log_type all", lines)
            first = lines.index(f"listener {b.ports[0]} 127.0.0.1")
            second = lines.index(f"listener {b.ports[1]} 127.0.0.1")
            block = [f"plugin {so}", "plugin_opt_config_file /x/d.json", f"plugin {so}",
                     f"plugin_opt_file_path {b.dir}/e.jsonl", "plugin_opt_events *"]
            self.assertEqual(lines[first + 1:first + 6], block)
            self.assertEqual(lines[first + 6], "allow_anonymous true")
            self.assertEqual(lines[second + 1:second + 6], block)
            self.assertLess(lines.index("per_listener_settings true"), first)
            self.assertIn(f"# {b.ports[1]} {b.dir}", lines)
        finally:
            b.cleanup()


class BrokerTest(BrokerTestCase):
    def test_start_sighup_stop(self):
        b = self.start_broker(["allow_anonymous true"], plugin=False)
        self.assertTrue(b.alive())
        self.assertIn(" running", b.log())
        c = RawClient(b.port, "selfcheck")
        self.assertEqual(c.connect().rc, 0)
        b.sighup()
        self.assertIn("Reloading config.", b.log())
        self.assertTrue(c.alive())
        c.disconnect()
        self.assertEqual(b.stop(), 0)
        self.assertFalse(b.alive())
        self.assertEqual(b.stop(), 0)  # idempotent

    def test_restart_and_port_retry(self):
        b = self.start_broker(["allow_anonymous true"], plugin=False)
        c = RawClient(b.port, "ünïcødé-client")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        self.assertEqual(b.stop(), 0)
        b.start()  # the log already holds multibyte text from the first run
        c = RawClient(b.port, "again")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        b.stop()
        # A port taken between free_port() and bind: start() moves on.
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            b.ports = [blocker.getsockname()[1]]
            b.start()
            self.assertNotEqual(b.port, blocker.getsockname()[1])
            self.assertTrue(b.alive())

    def test_bad_config_reports_log(self):
        b = Broker(["no_such_option 1"], plugin=False, start=False)
        self.add_broker(b)
        with self.assertRaises(BrokerError) as cm:
            b.start()
        self.assertIn("no_such_option", str(cm.exception))

    def test_preload_is_passed(self):
        old = os.environ.get("EH_BROKER_PRELOAD")
        try:
            os.environ["EH_BROKER_PRELOAD"] = "libc.so.6"
            b = self.start_broker(["allow_anonymous true"], plugin=False)
            environ = Path(f"/proc/{b.proc.pid}/environ").read_bytes().split(b"\0")
            self.assertIn(b"LD_PRELOAD=libc.so.6", environ)
        finally:
            if old is None:
                os.environ.pop("EH_BROKER_PRELOAD", None)
            else:
                os.environ["EH_BROKER_PRELOAD"] = old

    def test_failure_prints_broker_log(self):
        outer = self

        class Inner(BrokerTestCase):
            def test_fails(self):
                self.start_broker(["allow_anonymous true"], plugin=False, name="inner-broker")
                self.fail("deliberate")

            def test_passes(self):
                self.start_broker(["allow_anonymous true"], plugin=False, name="quiet-broker")

        for name, dumped in (("test_fails", True), ("test_passes", False)):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                Inner(name).run(unittest.TestResult())
            outer.assertEqual("mosquitto version" in out.getvalue(), dumped, out.getvalue())


class ClientTest(BrokerTestCase):
    def setUp(self):
        self.broker = self.start_broker(["allow_anonymous true", "max_inflight_messages 0"],
                                        plugin=False)

    def tearDown(self):
        for c in getattr(self, "_clients", []):
            c.close()

    def raw(self, cid, proto=MQTTV311):
        c = RawClient(self.broker.port, cid, proto)
        self.__dict__.setdefault("_clients", []).append(c)
        return c

    def test_raw_pubsub_all_qos(self):
        for proto in (MQTTV311, MQTTV5):
            sub, pub = self.raw(f"sub{proto}", proto), self.raw(f"pub{proto}", proto)
            self.assertEqual(sub.connect().rc, 0)
            self.assertEqual(pub.connect().rc, 0)
            self.assertEqual(sub.subscribe([(f"t{proto}/#", 2)]), [2])
            for qos in (0, 1, 2):
                self.assertEqual(pub.publish(f"t{proto}/{qos}", b"m", qos), None if qos == 0 else 0)
            # The broker denies $SYS writes before any plugin: 135 in MQTT 5.
            self.assertEqual(pub.publish("$SYS/x", b"", 1), 135 if proto == MQTTV5 else 0)
            barrier([pub], [sub])
            self.assertEqual(sorted(sub.messages),
                             [Message(f"t{proto}/{q}", b"m", q, False) for q in (0, 1, 2)])
            self.assertEqual(sub.unsubscribe([f"t{proto}/#", "nothing"]),
                             [0, 17] if proto == MQTTV5 else [])
            pub.disconnect()
            sub.disconnect()

    def test_wills(self):
        watcher = self.raw("watcher")
        watcher.connect()
        watcher.subscribe("will/#", 1)
        for name, end in (("abnormal", RawClient.drop), ("normal", RawClient.disconnect)):
            c = self.raw(name)
            self.assertEqual(c.connect(will=Will(f"will/{name}", b"bye", 1)).rc, 0)
            end(c)
        barrier([], [watcher])
        self.assertEqual(watcher.messages, [Message("will/abnormal", b"bye", 1, False)])

    def test_durable_session_and_takeover(self):
        for proto, expiry in ((MQTTV311, None), (MQTTV5, 60)):
            cid = f"durable{proto}"
            c = self.raw(cid, proto)
            ack = c.connect(clean=False, session_expiry=expiry)
            self.assertEqual((ack.rc, ack.session_present), (0, False))
            c.subscribe("dur/#", 1)
            c.disconnect()
            pub = self.raw(f"p{proto}", proto)
            pub.connect()
            pub.publish("dur/x", b"queued", 1)
            pub.disconnect()
            again = self.raw(cid, proto)
            ack = again.connect(clean=False, session_expiry=expiry)
            self.assertEqual((ack.rc, ack.session_present), (0, True))
            again.ping()
            self.assertEqual(again.messages, [Message("dur/x", b"queued", 1, False)])
            # Same client id again: the older connection is closed.
            third = self.raw(cid, proto)
            self.assertEqual(third.connect(clean=True, session_expiry=0 if expiry else None).rc, 0)
            self.assertFalse(again.alive())
            third.disconnect()

    def test_refused_connack(self):
        b = self.start_broker(["allow_anonymous false"], plugin=False)
        for proto, code in ((MQTTV311, 5), (MQTTV5, 135)):
            c = RawClient(b.port, "refused", proto)
            ack = c.connect(username="nobody", password="x")
            self.assertEqual(ack.rc, code)
            self.assertTrue(c.wait_closed())
            c.close()
            p = Client(b.port, "refused-paho", proto)
            self.assertEqual(p.connect(username="nobody", password="x"), code)
            p.close()

    def test_paho_client_and_collector(self):
        for proto in (MQTTV311, MQTTV5):
            col = Collector(self.broker.port, [f"p{proto}/#"], qos=2,
                            client_id=f"col{proto}", protocol=proto)
            self.assertEqual(col.granted, [2])
            c = Client(self.broker.port, f"paho{proto}", proto)
            self.assertEqual(c.connect(), 0)
            self.assertFalse(c.session_present)
            self.assertEqual(c.subscribe(f"p{proto}/own", 1), [1])
            self.assertIsNone(c.publish(f"p{proto}/0", "zero", 0))
            self.assertEqual(c.publish(f"p{proto}/1", "one", 1), 0)
            self.assertEqual(c.publish(f"p{proto}/2", "two", 2), 0)
            self.assertEqual(c.publish("$SYS/denied", "x", 1), 135 if proto == MQTTV5 else 0)
            self.assertEqual(c.publish(f"p{proto}/own", "self", 1), 0)
            got = col.wait_messages(4)
            self.assertEqual(sorted(got), [Message(f"p{proto}/0", b"zero", 0, False),
                                           Message(f"p{proto}/1", b"one", 1, False),
                                           Message(f"p{proto}/2", b"two", 2, False),
                                           Message(f"p{proto}/own", b"self", 1, False)])
            self.assertEqual(c.wait_messages(1), [Message(f"p{proto}/own", b"self", 1, False)])
            # barrier() accepts paho clients: nothing else is on its way.
            c.publish(f"p{proto}/late", "late", 0)
            barrier([c], [col])
            self.assertEqual(col.messages[-1], Message(f"p{proto}/late", b"late", 0, False))
            c.disconnect()
            self.assertTrue(c.closed)
            with self.assertRaises(h.MqttClosed):
                c.ping()
            col.disconnect()

    def test_paho_will_and_session(self):
        watcher = self.raw("paho-watcher")
        watcher.connect()
        watcher.subscribe("pw/#", 1)
        c = Client(self.broker.port, "paho-will", MQTTV5)
        self.assertEqual(c.connect(will=Will("pw/gone", b"x", 1), clean_start=False,
                                   session_expiry=60), 0)
        c.close()  # abnormal: the will fires
        watcher.wait_messages(1)
        c2 = Client(self.broker.port, "paho-will", MQTTV5)
        self.assertEqual(c2.connect(clean_start=False, session_expiry=0), 0)
        self.assertTrue(c2.session_present)
        c2.disconnect()
        self.assertEqual(watcher.messages, [Message("pw/gone", b"x", 1, False)])


if __name__ == "__main__":
    unittest.main()
