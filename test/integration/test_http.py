"""The HTTP sink against a real HTTP(S) server (http_peer.HttpPeer) and a
real mosquitto carrying the plugin.

Events come from real MQTT clients: one client connecting and disconnecting
cleanly yields client.connect, client.connected and client.disconnected, so
``session(n)`` makes exactly 3n events in a known order.  Waits are
deadlines (tens of seconds) on what the server received; "nothing more"
is proven by the broker's shutdown counters, which are final.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import Broker, BrokerError, BrokerTestCase, RawClient, TIMEOUT, wait_until  # noqa: E402
from http_peer import HttpPeer, Reply, free_port, server_context  # noqa: E402

EXPECTED_3 = ["client.connect", "client.connected", "client.disconnected"]
STOPPED = re.compile(r"eventhook: http: stopped; enqueued (\d+), delivered (\d+), failed (\d+), "
                     r"dropped (\d+), left undelivered at shutdown (\d+)")
SECRET_B64 = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
TOKEN = "tok-SECRET-7f3a"


def counters(broker):
    """The final counters from the shutdown log line (broker stopped)."""
    m = STOPPED.search(broker.log())
    if not m:
        raise AssertionError("no shutdown counters in the broker log")
    return dict(zip(("enqueued", "delivered", "failed", "dropped", "left"), map(int, m.groups())))


def verify_signature(req, key: bytes) -> bool:
    """An independent Standard Webhooks verification (Python's hmac)."""
    msg_id = req.headers["webhook-id"]
    ts = req.headers["webhook-timestamp"]
    signed = msg_id.encode() + b"." + ts.encode() + b"." + req.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s.split(",", 1)[1])
               for s in req.headers["webhook-signature"].split(" ") if s.startswith("v1,"))


class HttpSinkCase(BrokerTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="eh-http-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def peer(self, **kw) -> HttpPeer:
        p = HttpPeer(**kw)
        self.addCleanup(p.stop)
        return p

    def broker(self, url, **opts):
        base = {"http_url": url, "node_id": "node-a", "http_retry_initial_ms": 20,
                "http_retry_max_ms": 100, "stats_interval": 0}
        base.update(opts)
        return self.start_broker(["allow_anonymous true"], plugin_opts=base)

    def requests_until_token(self, broker, peer, authorization):
        """After a SIGHUP that rotated the token file: the reload reaches the
        sink thread asynchronously, so keep making one-client sessions (3
        events each, after one earlier session) until a request carries
        the new Authorization; returns every request so far."""
        for i in range(50):
            self.session(broker, 1, prefix=f"d{i}-")
            reqs = peer.wait_requests(3 * (i + 2))
            if reqs[-1].headers["authorization"] == authorization:
                break
        return reqs

    def session(self, broker, n=1, prefix="c"):
        """n clients connect and disconnect in turn: 3n events."""
        for i in range(n):
            c = RawClient(broker.port, f"{prefix}{i}")
            self.assertEqual(c.connect().rc, 0)
            c.disconnect()

    def assert_sessions(self, events, n, prefix="c"):
        self.assertEqual([e["event"] for e in events], EXPECTED_3 * n)
        self.assertEqual([e["clientid"] for e in events], [f"{prefix}{i}" for i in range(n) for _ in range(3)])
        self.assertEqual([e["seq"] for e in events], list(range(1, 3 * n + 1)))
        self.assertEqual(len({e["id"] for e in events}), 3 * n)


class Formats(HttpSinkCase):
    def test_json_single_headers_signature_keepalive(self):
        peer = self.peer()
        (self.tmp / "secret").write_text(f"whsec_{SECRET_B64}\n")
        (self.tmp / "token").write_text(TOKEN + "\n")
        b = self.broker(peer.url, http_signing_secret_file=self.tmp / "secret",
                        http_bearer_token_file=self.tmp / "token",
                        http_header="X-Tenant: t-42")
        self.session(b, 2)
        reqs = peer.wait_requests(6)
        events = peer.delivered_events()
        self.assert_sessions(events, 2)
        key = base64.b64decode(SECRET_B64)
        for r, ev in zip(reqs, events):
            self.assertEqual(r.method, "POST")
            self.assertEqual(r.path, "/hook")
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertEqual(r.headers["user-agent"], "mosquitto-eventhook/0.1.0")
            self.assertEqual(r.headers["authorization"], f"Bearer {TOKEN}")
            self.assertEqual(r.headers["x-tenant"], "t-42")
            self.assertEqual(r.headers["webhook-id"], ev["id"])
            self.assertTrue(verify_signature(r, key), r.headers)
            self.assertLess(abs(int(r.headers["webhook-timestamp"]) - time.time()), 3600)
            self.assertIsInstance(r.json(), dict)
        self.assertEqual(reqs[0].json(), {
            "event": "client.connect", "id": events[0]["id"], "ts": events[0]["ts"], "node": "node-a",
            "seq": 1, "clientid": "c0", "peer": "127.0.0.1", "protocol": "mqtt", "proto_ver": 4,
            "keepalive": 60, "clean_start": True})
        # keep-alive: every request on one connection
        self.assertEqual(len({r.conn for r in reqs}), 1, [r.conn for r in reqs])
        b.stop()
        self.assertEqual(counters(b), dict(enqueued=6, delivered=6, failed=0, dropped=0, left=0))
        self.assertNotIn(TOKEN, b.log())

    def test_sighup_rereads_token(self):
        peer = self.peer()
        (self.tmp / "token").write_text("token-one\n")
        b = self.broker(peer.url, http_bearer_token_file=self.tmp / "token")
        self.session(b, 1)
        peer.wait_requests(3)
        (self.tmp / "token").write_text("token-two\n")
        b.sighup()
        reqs = self.requests_until_token(b, peer, "Bearer token-two")
        tokens = [r.headers["authorization"] for r in reqs]
        self.assertEqual(tokens[:3], ["Bearer token-one"] * 3)
        self.assertEqual(tokens[-1], "Bearer token-two")
        switch = tokens.index("Bearer token-two")
        self.assertEqual(set(tokens[switch:]), {"Bearer token-two"})
        self.assertEqual(set(tokens[:switch]), {"Bearer token-one"})

    def test_sighup_rereads_secret_files_not_header_values(self):
        peer = self.peer()
        (self.tmp / "token").write_text("token-one\n")
        (self.tmp / "secret").write_text("key-one")
        b = self.broker(peer.url, http_bearer_token_file=self.tmp / "token",
                        http_signing_secret_file=self.tmp / "secret", http_header="X-Key: old-value")
        self.session(b, 1)
        peer.wait_requests(3)
        (self.tmp / "token").write_text("token-two\n")
        (self.tmp / "secret").write_text("key-two")
        b.plugin_opts["http_header"] = "X-Key: new-value"
        b.write_config()
        self.assertIn("plugin_opt_http_header X-Key: new-value", b.conf_path.read_text())
        b.sighup()
        reqs = self.requests_until_token(b, peer, "Bearer token-two")
        last = reqs[-1]
        self.assertEqual(last.headers["authorization"], "Bearer token-two")
        self.assertTrue(verify_signature(last, b"key-two"))
        # Mosquitto 2.0 hands plugin options over only at start.
        self.assertEqual({r.headers["x-key"] for r in reqs}, {"old-value"})
        self.assertIn("Reloading config.", b.log())

    def test_json_array_batch(self):
        peer = self.peer()
        (self.tmp / "secret").write_bytes(b"raw-secret-bytes")
        b = self.broker(peer.url, http_batch_max=3, http_batch_linger_ms=60000,
                        http_signing_secret_file=self.tmp / "secret")
        self.session(b, 2)
        reqs = peer.wait_requests(2)
        self.assertEqual(len(reqs), 2)
        for i, r in enumerate(reqs):
            self.assertEqual(r.headers["content-type"], "application/json")
            body = r.json()
            self.assertIsInstance(body, list)
            self.assertEqual(len(body), 3)
            self.assertEqual(r.headers["webhook-id"], body[0]["id"] + ".3")
            self.assertTrue(verify_signature(r, b"raw-secret-bytes"))
        self.assert_sessions(peer.delivered_events(), 2)

    def test_ndjson_batch(self):
        peer = self.peer()
        b = self.broker(peer.url, http_batch_max=3, http_batch_linger_ms=60000, http_batch_format="ndjson")
        self.session(b, 1)
        (r,) = peer.wait_requests(1)
        self.assertEqual(r.headers["content-type"], "application/x-ndjson")
        lines = r.body.split(b"\n")
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[3], b"")
        self.assert_sessions(peer.delivered_events(), 1)

    def check_cloudevent(self, ce, ev_type):
        self.assertEqual(set(ce), {"specversion", "type", "source", "id", "time", "datacontenttype", "data"})
        self.assertEqual(ce["specversion"], "1.0")
        self.assertEqual(ce["type"], ev_type)
        self.assertEqual(ce["source"], "node-a")
        self.assertEqual(ce["datacontenttype"], "application/json")
        self.assertEqual(ce["id"], ce["data"]["id"])
        self.assertEqual(ce["time"], ce["data"]["ts"])
        self.assertEqual(ce["data"]["event"], ev_type)

    def test_cloudevents_single_and_batch(self):
        peer = self.peer()
        b = self.broker(peer.url, http_format="cloudevents")
        self.session(b, 1)
        reqs = peer.wait_requests(3)
        for r, t in zip(reqs, EXPECTED_3):
            self.assertEqual(r.headers["content-type"], "application/cloudevents+json")
            self.check_cloudevent(r.json(), t)
        b.stop()

        peer2 = self.peer()
        b2 = self.broker(peer2.url, http_format="cloudevents", http_batch_max=3, http_batch_linger_ms=60000)
        self.session(b2, 1)
        (r,) = peer2.wait_requests(1)
        self.assertEqual(r.headers["content-type"], "application/cloudevents-batch+json")
        batch = r.json()
        self.assertEqual(len(batch), 3)
        for ce, t in zip(batch, EXPECTED_3):
            self.check_cloudevent(ce, t)
        self.assertEqual(len({ce["id"] for ce in batch}), 3)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


def make_cert(d, name, ca, cn, ext):
    (Path(d) / f"{name}.ext").write_text(ext + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


class Tls(HttpSinkCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="eh-http-pki-")
        d = cls.pki
        make_ca(d, "ca")
        make_ca(d, "otherca")
        server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
        make_cert(d, "server", "ca", "localhost", server_ext)
        make_cert(d, "rogue", "otherca", "localhost", server_ext)
        make_cert(d, "client", "ca", "eh-client", "extendedKeyUsage=clientAuth")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, True)

    def p(self, name):
        return os.path.join(self.pki, name)

    def test_https_mutual_tls(self):
        peer = self.peer(tls=server_context(self.p("server.crt"), self.p("server.key"), client_ca=self.p("ca.crt")))
        b = self.broker(peer.url, http_ca_file=self.p("ca.crt"), http_client_cert=self.p("client.crt"),
                        http_client_key=self.p("client.key"))
        self.session(b, 1)
        reqs = peer.wait_requests(3)
        self.assert_sessions(peer.delivered_events(), 1)
        subject = dict(x[0] for x in reqs[0].client_cert["subject"])
        self.assertEqual(subject["commonName"], "eh-client")
        self.assertEqual(len({r.conn for r in reqs}), 1)

    def test_wrong_server_certificate_refused(self):
        peer = self.peer(tls=server_context(self.p("rogue.crt"), self.p("rogue.key")))
        b = self.broker(peer.url, http_ca_file=self.p("ca.crt"), shutdown_timeout_ms=0)
        self.session(b, 1)
        wait_until(lambda: peer.tls_failures >= 2 and "retrying" in b.log(), message="refused handshakes")
        b.stop()
        self.assertEqual(peer.requests, [])
        self.assertRegex(b.log(), r"eventhook: http: .*(certificate|SSL).* from https://127\.0\.0\.1:\d+/hook; retrying")
        c = counters(b)
        self.assertEqual((c["enqueued"], c["delivered"], c["left"]), (3, 0, 3))

    def test_unusable_tls_files_refused_at_start(self):
        garbage = self.tmp / "garbage.pem"
        garbage.write_text("not a certificate\n")
        encrypted = self.tmp / "encrypted.key"
        openssl("pkey", "-in", self.p("client.key"), "-aes256", "-passout", "pass:pw", "-out", str(encrypted),
                cwd=self.pki)
        combined = self.tmp / "combined.pem"
        combined.write_text(Path(self.p("client.crt")).read_text() + Path(self.p("client.key")).read_text())
        # A good certificate, then a damaged block: curl loads the whole
        # bundle or chain and would fail on it.
        damaged = self.tmp / "damaged.pem"
        damaged.write_text(Path(self.p("ca.crt")).read_text()
                           + "-----BEGIN CERTIFICATE-----\nMIIB!!!not base64\n-----END CERTIFICATE-----\n")
        d = str(self.tmp)
        cases = [
            ({"http_ca_file": damaged},
             f"plugin_opt_http_ca_file: '{damaged}' holds a certificate that cannot be read after the first one"),
            ({"http_client_cert": damaged, "http_client_key": self.p("client.key")},
             f"plugin_opt_http_client_cert: '{damaged}' holds a certificate that cannot be read after the first one"),
            ({"http_ca_file": d}, f"plugin_opt_http_ca_file: '{d}' is not a regular file"),
            ({"http_ca_file": garbage}, f"plugin_opt_http_ca_file: '{garbage}' holds no PEM certificate"),
            ({"http_client_cert": d}, f"plugin_opt_http_client_cert: '{d}' is not a regular file"),
            ({"http_client_cert": garbage}, f"plugin_opt_http_client_cert: '{garbage}' holds no PEM certificate"),
            ({"http_client_cert": self.p("client.crt")},
             f"plugin_opt_http_client_cert: '{self.p('client.crt')}' holds no unencrypted PEM private key "
             "(give it with plugin_opt_http_client_key)"),
            ({"http_client_cert": self.p("client.crt"), "http_client_key": d},
             f"plugin_opt_http_client_key: '{d}' is not a regular file"),
            ({"http_client_cert": self.p("client.crt"), "http_client_key": encrypted},
             f"plugin_opt_http_client_key: '{encrypted}' holds no unencrypted PEM private key"),
            ({"http_client_cert": self.p("client.crt"), "http_client_key": self.p("server.key")},
             f"plugin_opt_http_client_key: the key in '{self.p('server.key')}' does not match the certificate "
             f"in '{self.p('client.crt')}'"),
        ]
        for opts, message in cases:
            with self.subTest(message):
                with self.assertRaises(BrokerError) as cm:
                    self.broker("https://127.0.0.1:9/hook", **opts)
                self.assertIn(f"eventhook: configuration error: {message}", cm.exception.log)
        # A certificate file that holds its key too is fine without
        # http_client_key, and is what the server then sees.
        peer = self.peer(tls=server_context(self.p("server.crt"), self.p("server.key"), client_ca=self.p("ca.crt")))
        b = self.broker(peer.url, http_ca_file=self.p("ca.crt"), http_client_cert=combined)
        self.session(b, 1)
        reqs = peer.wait_requests(3)
        self.assertEqual(dict(x[0] for x in reqs[0].client_cert["subject"])["commonName"], "eh-client")

    def test_insecure_opt_out_is_logged(self):
        peer = self.peer(tls=server_context(self.p("rogue.crt"), self.p("rogue.key")))
        b = self.broker(peer.url, http_tls_insecure="true")
        self.assertIn("eventhook: http: plugin_opt_http_tls_insecure is on: the server's certificate is NOT verified",
                      b.log())
        self.session(b, 1)
        peer.wait_requests(3)
        self.assert_sessions(peer.delivered_events(), 1)


class Failures(HttpSinkCase):
    def test_server_down_at_start_then_up(self):
        port = free_port()
        b = self.broker(f"http://127.0.0.1:{port}/hook", http_batch_max=4)
        self.session(b, 5)
        wait_until(lambda: "retrying" in b.log(), message="a refused connection logged")
        peer = self.peer(port=port)
        peer.wait_events(lambda evs: len(evs) >= 15, what="15 events")
        b.stop()
        self.assert_sessions(peer.delivered_events(), 5)
        self.assertEqual(counters(b), dict(enqueued=15, delivered=15, failed=0, dropped=0, left=0))
        self.assertIn("delivering to http://127.0.0.1:%d/hook again" % port, b.log())

    def test_server_killed_mid_stream_then_restored(self):
        port = free_port()
        first_peer = HttpPeer(port=port)
        b = self.broker(f"http://127.0.0.1:{port}/hook", http_batch_max=4)
        self.session(b, 3, prefix="a")
        first_peer.wait_events(lambda evs: len(evs) >= 9, what="the first 9 events")
        first = first_peer.delivered_events()
        first_peer.stop()  # the server dies; the sink's kept-alive connection goes with it
        self.session(b, 4, prefix="b")
        wait_until(lambda: "retrying" in b.log(), message="the outage noticed")
        peer = self.peer(port=port)
        peer.wait_events(lambda evs: len(evs) >= 12, what="the 12 events kept during the outage")
        b.stop()
        events = first + peer.delivered_events()
        # Nothing lost, nothing twice, in order across the outage.
        self.assertEqual([e["seq"] for e in events], list(range(1, 22)))
        self.assertEqual([e["clientid"] for e in events],
                         [f"{p}{i}" for p, n in (("a", 3), ("b", 4)) for i in range(n) for _ in range(3)])
        self.assertEqual(counters(b), dict(enqueued=21, delivered=21, failed=0, dropped=0, left=0))

    def test_500s_then_recovery_same_message_id(self):
        peer = self.peer()
        peer.script(Reply(500), Reply(503), Reply(502))
        (self.tmp / "secret").write_text(f"whsec_{SECRET_B64}")
        b = self.broker(peer.url, http_signing_secret_file=self.tmp / "secret")
        self.session(b, 1)
        reqs = peer.wait_requests(6)
        self.assertEqual([r.status for r in reqs], [500, 503, 502, 200, 200, 200])
        self.assertEqual(len({r.body for r in reqs[:4]}), 1)
        self.assertEqual(len({r.headers["webhook-id"] for r in reqs[:4]}), 1)
        b.stop()
        self.assert_sessions(peer.delivered_events(), 1)
        self.assertEqual(counters(b), dict(enqueued=3, delivered=3, failed=0, dropped=0, left=0))

    def test_429_retry_after_honoured(self):
        peer = self.peer()
        peer.script(Reply(429, headers={"Retry-After": "1"}))
        b = self.broker(peer.url, http_retry_initial_ms=1, http_retry_max_ms=5)
        self.session(b, 1)
        reqs = peer.wait_requests(4)
        self.assertEqual([r.status for r in reqs], [429, 200, 200, 200])
        # Without Retry-After the retry would come after at most 5 ms.
        self.assertGreaterEqual(reqs[1].t - reqs[0].t, 0.9)
        self.assert_sessions(peer.delivered_events(), 1)

    def test_late_retry_after_past_budget_gives_up_at_once(self):
        peer = self.peer()
        # Six plain 503s take 1.1 to 2.2 s of the 3 s budget (delays of
        # 100-200 ms, then 200-400 ms); then the server asks for an hour.
        peer.script(*[Reply(503)] * 6)
        peer.default = Reply(503, headers={"Retry-After": "3600"})
        b = self.broker(peer.url, http_events="client.connected", http_retry_initial_ms=200,
                        http_retry_max_ms=400, http_retry_max_elapsed_ms=3000)
        self.session(b, 1)
        wait_until(lambda: "gave up on" in b.log(), message="the batch given up")
        b.stop()
        # Given up on the first Retry-After answer: no request after it, and
        # well inside the budget (it used to wait a fresh 3 s, then try again).
        self.assertEqual([r.status for r in peer.requests], [503] * 7)
        m = re.search(r"eventhook: http: gave up on 1 event\(s\) after (\d+) ms of retries: the server asked to "
                      r"wait 3600000 ms, past the 3000 ms budget", b.log())
        self.assertIsNotNone(m, b.log())
        self.assertLess(int(m.group(1)), 3000)
        self.assertEqual(b.log().count("gave up on"), 1)
        self.assertEqual(counters(b), dict(enqueued=1, delivered=0, failed=1, dropped=0, left=0))

    def test_400_dropped_counted_logged_once(self):
        peer = self.peer()
        peer.script(Reply(400, body=b"schema mismatch"), Reply(400), Reply(200), Reply(404))
        (self.tmp / "token").write_text(TOKEN)
        b = self.broker(peer.url.replace("/hook", "/hook?key=qs-secret"), http_bearer_token_file=self.tmp / "token")
        self.session(b, 2)
        reqs = peer.wait_requests(6)
        self.assertEqual([r.status for r in reqs], [400, 400, 200, 404, 200, 200])
        b.stop()
        events = peer.delivered_events()
        self.assertEqual([e["seq"] for e in events], [3, 5, 6])
        self.assertEqual(counters(b), dict(enqueued=6, delivered=3, failed=3, dropped=0, left=0))
        log = b.log()
        self.assertEqual(log.count("HTTP 400 from"), 1)
        self.assertEqual(log.count("HTTP 404 from"), 1)
        self.assertIn(f"HTTP 400 from http://127.0.0.1:{peer.port}/hook?...: 1 event(s) dropped", log)
        self.assertIn("schema mismatch", log)
        self.assertNotIn(TOKEN, log)
        self.assertNotIn("qs-secret", log)

    def publishes(self, broker, cid, payloads):
        """One client connects, publishes each payload on t/<i>, disconnects:
        2 + len(payloads) + 1 events."""
        c = RawClient(broker.port, cid)
        self.assertEqual(c.connect().rc, 0)
        for i, p in enumerate(payloads):
            c.publish(f"t/{i}", p)
        c.disconnect()

    PUBLISH_EVENTS = "client.connect,client.connected,message.publish,client.disconnected"
    EXPECTED_PUB3 = ["client.connect", "client.connected"] + ["message.publish"] * 3 + ["client.disconnected"]

    def test_413_for_one_event_fails_it_alone_and_the_next_are_delivered(self):
        # A receiver with a body size limit (nginx's client_max_body_size,
        # answered here before the body is read) and one event over it: that
        # event is counted failed, named in the log, and never holds back
        # the events after it.
        peer = self.peer()
        peer.max_body = 20000
        peer.refuse_early = True
        b = self.broker(peer.url, http_events=self.PUBLISH_EVENTS)
        self.publishes(b, "big", [b"a", b"x" * 30000, b"c"])
        self.session(b, 1)
        events = peer.wait_events(lambda evs: len(evs) == 8, what="the 8 events that fit")
        self.assertEqual([e["seq"] for e in events], [1, 2, 3, 5, 6, 7, 8, 9])
        self.assertEqual([e["event"] for e in events[:5]], self.EXPECTED_PUB3[:3] + self.EXPECTED_PUB3[4:])
        self.assertEqual([e.get("payload") for e in events[2:4]], ["YQ==", "Yw=="])
        self.assertEqual([r.status for r in peer.requests], [200] * 3 + [413] + [200] * 5)
        b.stop()
        self.assertEqual(counters(b), dict(enqueued=9, delivered=8, failed=1, dropped=0, left=0))
        big = int(peer.requests[3].headers["content-length"])
        self.assertRegex(b.log(), rf"eventhook: http: event seq 4 \({big} bytes\) refused with HTTP 413 by "
                                  rf"http://127\.0\.0\.1:{peer.port}/hook even when sent alone; counted failed")

    def test_413_for_a_batch_splits_it_and_fails_only_the_event_over_the_limit(self):
        # A batch the receiver refuses as too large is split in halves until
        # each part is taken; an event refused alone is counted failed and
        # the others are delivered, in order.
        peer = self.peer()
        peer.max_body = 20000
        (self.tmp / "secret").write_bytes(b"raw-secret-bytes")  # for webhook-id: <first id>.<count>
        b = self.broker(peer.url, http_events=self.PUBLISH_EVENTS, http_batch_max=6, http_batch_linger_ms=60000,
                        http_signing_secret_file=self.tmp / "secret")
        # 6 events, the fourth over the limit alone.
        self.publishes(b, "big", [b"a", b"x" * 30000, b"c"])
        events = peer.wait_events(lambda evs: len(evs) == 5, what="the 5 events that fit")
        self.assertEqual([e["seq"] for e in events], [1, 2, 3, 5, 6])
        # The batch, its first half, its second half, the event over the
        # limit alone, the rest of that half.
        self.assertEqual([(r.status, int(r.headers["webhook-id"].split(".")[1])) for r in peer.requests],
                         [(413, 6), (200, 3), (413, 3), (413, 1), (200, 2)])
        # 6 events no one of which is too large, but together they are.
        self.publishes(b, "medium", [b"m" * 8000] * 3)
        events = peer.wait_events(lambda evs: len(evs) == 11, what="the 6 medium events")
        self.assertEqual([e["seq"] for e in events], [1, 2, 3, 5, 6] + list(range(7, 13)))
        self.assertEqual([e["event"] for e in events[5:]], self.EXPECTED_PUB3)
        self.assertTrue(all(len(r.body) <= 20000 for r in peer.delivered()))
        b.stop()
        self.assertEqual(counters(b), dict(enqueued=12, delivered=11, failed=1, dropped=0, left=0))
        self.assertEqual(len(re.findall(r"refused with HTTP 413", b.log())), 1, b.log())
        self.assertIn("eventhook: http: event seq 4 (", b.log())

    def test_413_split_part_retried_as_the_same_request(self):
        # A part of a split batch that fails transiently is sent again as
        # that same request, with the same webhook-id, so a receiver that
        # deduplicates by it never gets those events twice under two ids.
        peer = self.peer()
        peer.max_body = 20000
        peer.script(Reply(200), Reply(503))
        (self.tmp / "secret").write_bytes(b"raw-secret-bytes")
        b = self.broker(peer.url, http_events="message.publish", http_batch_max=8, http_batch_linger_ms=60000,
                        http_signing_secret_file=self.tmp / "secret")
        c = RawClient(b.port, "p")
        self.assertEqual(c.connect().rc, 0)
        for i, n in enumerate([7100, 7100] + [100] * 6):
            c.publish(f"t/{i}", b"x" * n)
        c.disconnect()
        peer.wait_events(lambda evs: len(evs) == 8, what="the 8 events")
        b.stop()
        first = lambda r: int(r.headers["webhook-id"].split(".")[0].rsplit("-", 1)[1], 16)  # noqa: E731
        self.assertEqual([(r.status, first(r), int(r.headers["webhook-id"].split(".")[1])) for r in peer.requests],
                         [(413, 1, 8), (413, 1, 4), (200, 1, 2), (503, 3, 2), (200, 3, 2), (200, 5, 4)])
        self.assertEqual([e["seq"] for e in peer.delivered_events()], list(range(1, 9)))
        self.assertEqual(counters(b), dict(enqueued=8, delivered=8, failed=0, dropped=0, left=0))

    def test_url_credentials_and_query_masked_in_echoed_responses(self):
        peer = self.peer()
        user, password, value = "alice", "S3c/ret@Pw", "k-12345+6789"
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        query = "api_key=k-12345%2B6789&v=2"
        # A debug endpoint echoing the request, then an error naming what
        # it got, decoded.
        peer.script(Reply(400, echo=True),
                    Reply(403, body=f'{{"error":"bad api_key {value} for {user} / {password}"}}'.encode()))
        url = f"http://{user}:S3c%2Fret%40Pw@127.0.0.1:{peer.port}/hook?{query}"
        b = self.broker(url, http_events="client.connected")
        self.session(b, 2)
        reqs = peer.wait_requests(2)
        # curl still sends the credentials, decoded, as Basic; not in the URL.
        self.assertEqual(reqs[0].headers["authorization"], f"Basic {basic}")
        self.assertEqual(reqs[0].path, f"/hook?{query}")
        b.stop()
        log = b.log()
        shown = f"http://***@127.0.0.1:{peer.port}/hook?..."
        self.assertIn(f"eventhook: http: HTTP 400 from {shown}: 1 event(s) dropped; further 400 responses are "
                      f"counted, not logged. Response: POST /hook?{'*' * len(query)} HTTP/1.1", log)
        self.assertIn(f"Authorization: Basic {'*' * len(basic)}", log)
        self.assertIn(f"eventhook: http: HTTP 403 from {shown}: 1 event(s) dropped; further 403 responses are "
                      f"counted, not logged. Response: "
                      f'{{"error":"bad api_key {"*" * len(value)} for ***** / {"*" * len(password)}"}}', log)
        for secret in (basic, password, "S3c%2Fret%40Pw", value, "k-12345%2B6789", "alice"):
            self.assertNotIn(secret, log)

    def test_credentials_without_tls_noticed(self):
        peer = self.peer()
        for name, url, opts in (("userinfo", f"http://alice:pw@127.0.0.1:{peer.port}/hook", {}),
                                ("header", peer.url, {"http_header": "X-Key: k"}),
                                ("none", peer.url, {})):
            with self.subTest(name):
                b = self.broker(url, **opts)
                shown = url.replace("alice:pw@", "***@")
                self.assertEqual(b.log().count(f"eventhook: http: credentials are sent to {shown} without TLS"),
                                 0 if name == "none" else 1)
                self.assertEqual(b.log().count("credentials are sent"), 0 if name == "none" else 1)
                b.stop()

    def test_quoted_response_is_valid_utf8_without_controls(self):
        peer = self.peer()
        hostile = b"\x1b[31mred\xff\xfe\xc3(\x00nul\x07bell\x85\xc2\x9b2J\xe2\x80\xa8end \xc3\xa9"
        long_utf8 = b"a" * 199 + "\u00e9t\u00e9".encode() * 10
        peer.script(Reply(401, body=hostile), Reply(403, body=long_utf8))
        b = self.broker(peer.url, http_events="client.connected")
        self.session(b, 2)
        peer.wait_requests(2)
        b.stop()
        raw = b.log_path.read_bytes()
        raw.decode("utf-8")  # strict: the whole log is valid UTF-8
        prefix = f"eventhook: http: HTTP %d from {peer.url}: 1 event(s) dropped; further %d responses are counted, " \
                 "not logged. Response: "
        line401 = (prefix % (401, 401)).encode() + \
            b"\\x1B[31mred\\xFF\\xFE\\xC3(\\x00nul\\x07bell\\x85\\xC2\\x9B2J\\xE2\\x80\\xA8end \xc3\xa9\n"
        self.assertIn(line401, raw)
        # 200 bytes kept, cut inside the e-acute: the half character goes.
        line403 = (prefix % (403, 403)).encode() + b"a" * 199 + b"\n"
        self.assertIn(line403, raw)

    def test_server_never_answers_timeout_then_retry(self):
        peer = self.peer()
        peer.script(Reply(hang=True))
        b = self.broker(peer.url, http_timeout_ms=300)
        self.session(b, 1)
        peer.wait(lambda p: len(p.requests) >= 4 and all(r.status for r in p.requests[1:4]), what="4 requests")
        reqs = peer.requests
        self.assertEqual(reqs[0].body, reqs[1].body)
        self.assertEqual([r.status for r in reqs], [0, 200, 200, 200])
        b.stop()  # drains the log back-channel
        self.assertRegex(b.log(), r"eventhook: http: .*timed out.* from http://127\.0\.0\.1:\d+/hook; retrying")
        self.assert_sessions(peer.delivered_events(), 1)
        self.assertEqual(counters(b)["delivered"], 3)

    def test_hanging_server_never_slows_clients_and_full_ring_counts(self):
        peer = self.peer()
        peer.default = Reply(hang=True)
        b = self.broker(peer.url, queue_size=16, http_timeout_ms=600000)
        # While the first request hangs, clients keep getting CONNACK and
        # PUBACK, and the ring fills then drops.
        for i in range(10):
            c = RawClient(b.port, f"c{i}")
            self.assertEqual(c.connect().rc, 0)
            self.assertEqual(c.publish("t/x", b"p", qos=1), 0)
            c.disconnect()
        self.assertEqual(len(peer.requests), 1)
        peer.default = Reply(200)
        peer.release()  # the hung request ends unanswered: retried
        wait_until(lambda: "retrying" in b.log(), message="the unanswered request to be retried")
        c = RawClient(b.port, "late")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        b.stop()
        n = counters(b)
        events = peer.delivered_events()
        self.assertGreater(n["dropped"], 0)
        self.assertEqual(n["enqueued"] + n["dropped"], 33)
        self.assertEqual(n["enqueued"], n["delivered"] + n["failed"] + n["left"])
        self.assertEqual((n["failed"], n["left"]), (0, 0))
        self.assertEqual(len(events), n["delivered"])
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)))  # in order, none twice
        self.assertEqual(seqs[:16], list(range(1, 17)))  # the first 16 were in the ring

    def test_shutdown_abandons_hanging_request_at_deadline(self):
        peer = self.peer()
        peer.default = Reply(hang=True)
        b = self.broker(peer.url, http_timeout_ms=600000, shutdown_timeout_ms=500)
        self.session(b, 1)
        peer.wait(lambda p: p.requests, what="the first request")
        self.assertEqual(b.stop(timeout=TIMEOUT), 0)
        self.assertEqual(counters(b), dict(enqueued=3, delivered=0, failed=0, dropped=0, left=3))


class BlackHoleDns:
    """A UDP socket on port 53 of a random loopback address that reads DNS
    queries and never answers them: a resolver that is down upstream."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            self.addr = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(1, 254), random.randint(2, 254))
            try:
                self.sock.bind((self.addr, 53))
                break
            except OSError:
                continue
        else:
            raise unittest.SkipTest("no free loopback address for port 53")
        self.sock.settimeout(0.1)
        self.queries = []
        self._stopping = False
        self._thread = threading.Thread(target=self._swallow, daemon=True)
        self._thread.start()

    def _swallow(self):
        while not self._stopping:
            try:
                self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries.append(time.monotonic())

    def stop(self):
        self._stopping = True
        self._thread.join()
        self.sock.close()


class PrivateResolverBroker(Broker):
    """A broker in its own mount namespace (unshare -m) where
    /etc/resolv.conf and /etc/nsswitch.conf are bind-mounted from the
    given files, so its lookups go to a test DNS server and nothing else on
    the machine is affected. The shell execs mosquitto: the pid the harness
    signals is the broker's."""

    def __init__(self, *args, resolv_conf, nsswitch_conf, **kwargs):
        self.resolv_conf = str(resolv_conf)
        self.nsswitch_conf = str(nsswitch_conf)
        super().__init__(*args, **kwargs)

    def command(self):
        script = "mount --bind {} /etc/resolv.conf && mount --bind {} /etc/nsswitch.conf && exec {}".format(
            shlex.quote(self.resolv_conf), shlex.quote(self.nsswitch_conf),
            " ".join(shlex.quote(c) for c in super().command()))
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]

    def _env(self):
        # A proxy would do the lookup instead of the sink.
        return {k: v for k, v in super()._env().items() if not k.lower().endswith("_proxy")}


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare"),
                     "needs root: unshare -m, bind mounts and UDP port 53")
class DeadResolver(HttpSinkCase):
    def test_dns_never_answers_connect_timeout_and_shutdown_deadline_hold(self):
        dns = BlackHoleDns()
        self.addCleanup(dns.stop)
        # timeout:30: without quick exit every lookup holds the sink for 30 s.
        (self.tmp / "resolv.conf").write_text(f"nameserver {dns.addr}\noptions timeout:30 attempts:1\n")
        (self.tmp / "nsswitch.conf").write_text("hosts: files dns\n")
        opts = {"http_url": "http://hook.example.com:8080/hook", "node_id": "node-a", "stats_interval": 0,
                "http_connect_timeout_ms": 500, "http_timeout_ms": 3000, "shutdown_timeout_ms": 1000,
                "http_retry_initial_ms": 100, "http_retry_max_ms": 200}
        b = self.add_broker(PrivateResolverBroker(["allow_anonymous true"], plugin_opts=opts,
                                                  resolv_conf=self.tmp / "resolv.conf",
                                                  nsswitch_conf=self.tmp / "nsswitch.conf",
                                                  name="dead-resolver", start=False))
        b.start()
        self.session(b, 1)
        # The connect timeout holds although the lookup never ends...
        # (curl reports the time it measured: 500 or a little more.)
        resolve_failed = re.compile(r"eventhook: http: Resolving timed out after \d+ milliseconds from "
                                    r"http://hook\.example\.com:8080/hook; retrying")
        wait_until(lambda: resolve_failed.search(b.log()), message="the resolve timeout logged")
        # ...and the retry resolves again: a lookup is stuck when we stop.
        seen = len(dns.queries)
        wait_until(lambda: len(dns.queries) > seen, message="the retry's DNS query")
        t0 = time.monotonic()
        self.assertEqual(b.stop(timeout=60), 0)
        took = time.monotonic() - t0
        # The budget is 1 s; a stuck join takes the resolver's 30 s.
        self.assertLess(took, 15, f"broker stop took {took:.1f} s with shutdown_timeout_ms 1000")
        self.assertEqual(counters(b), dict(enqueued=3, delivered=0, failed=0, dropped=0, left=3))


class LibraryPathBroker(Broker):
    """A broker whose dynamic loader looks in a directory of the test's
    first (LD_LIBRARY_PATH), for a libcurl.so.4 that is not the real one."""

    def __init__(self, *args, library_dir, **kwargs):
        self.library_dir = str(library_dir)
        super().__init__(*args, **kwargs)

    def _env(self):
        env = super()._env()
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (self.library_dir, env.get("LD_LIBRARY_PATH")) if p)
        return env


class LibcurlLoading(HttpSinkCase):
    """libcurl is not linked into the plugin: the first http sink loads it,
    so that a broker without one does not carry it and the twenty libraries
    it brings (docs/performance.md, "What loading libcurl costs")."""

    def mapped(self, broker):
        with open(f"/proc/{broker.proc.pid}/maps", encoding="utf-8") as f:
            return {Path(line.split()[-1]).name for line in f if "/" in line}

    def test_loaded_only_with_an_http_sink(self):
        peer = self.peer()
        with self.subTest("file sink only"):
            b = self.start_broker(["allow_anonymous true"], plugin_opts={"file_path": self.tmp / "events.jsonl"})
            self.session(b, 1)
            maps = self.mapped(b)
            self.assertIn("mosquitto_eventhook.so", maps)
            self.assertFalse([m for m in maps if m.startswith(("libcurl", "libldap", "librtmp", "libssh2"))], maps)
            b.stop()
        with self.subTest("http sink"):
            b = self.broker(peer.url)
            self.session(b, 1)
            self.assert_sessions(peer.wait_events(lambda evs: len(evs) >= 3), 1)
            self.assertTrue([m for m in self.mapped(b) if m.startswith("libcurl.so.4")])

    def refused(self, library_dir):
        b = self.add_broker(LibraryPathBroker(["allow_anonymous true"], library_dir=library_dir, start=False,
                                              plugin_opts={"http_url": "http://127.0.0.1:9/hook",
                                                           "file_path": self.tmp / "events.jsonl"}))
        with self.assertRaises(BrokerError) as cm:
            b.start()
        self.assertNotEqual(cm.exception.returncode, 0)
        return cm.exception.log

    def test_missing_or_old_libcurl_refused_with_what_to_install(self):
        with self.subTest("not a library"):
            bad = self.tmp / "bad"
            bad.mkdir()
            (bad / "libcurl.so.4").write_text("not a library\n")
            self.assertIn("eventhook: configuration error: plugin_opt_http_url: cannot load libcurl "
                          f"({bad}/libcurl.so.4: file too short); the http sink needs it: install libcurl4 "
                          "(Debian, Ubuntu) or libcurl (Fedora, RHEL)", self.refused(bad))
        install = "install libcurl4 (Debian, Ubuntu) or libcurl (Fedora, RHEL)"
        with self.subTest("a function missing"):
            old = self.tmp / "old"
            old.mkdir()
            (old / "old.c").write_text("int curl_global_init(long flags) { return (int)flags * 0; }\n")
            self.fake_library(old, "old.c")
            self.assertIn(f"eventhook: configuration error: plugin_opt_http_url: the libcurl found "
                          f"({old}/libcurl.so.4) has no curl_easy_init: the http sink needs libcurl 7.85 or "
                          f"later: {install}", self.refused(old))
        with self.subTest("every function, too old a version"):
            # (7.80 to 7.84 have every function the sink calls, not the
            # option it needs)
            older = self.tmp / "older"
            older.mkdir()
            names = ("global_init easy_init easy_setopt easy_getinfo easy_cleanup easy_strerror multi_init "
                     "multi_add_handle multi_remove_handle multi_perform multi_poll multi_info_read multi_cleanup "
                     "slist_append slist_free_all url url_set url_get url_cleanup url_strerror free getdate").split()
            (older / "stubs.c").write_text("".join(f"void curl_{n}(void) {{}}\n" for n in names))
            (older / "version.c").write_text(
                "#include <curl/curl.h>\n"
                "static curl_version_info_data info = { .age = CURLVERSION_NOW, .version = \"7.84.0\", "
                ".version_num = 0x075400 };\n"
                "curl_version_info_data *curl_version_info(CURLversion v) { (void)v; return &info; }\n")
            self.fake_library(older, "stubs.c", "version.c")
            self.assertIn(f"eventhook: configuration error: plugin_opt_http_url: the libcurl found "
                          f"({older}/libcurl.so.4) is version 7.84.0: the http sink needs 7.85 or later: {install}",
                          self.refused(older))

    def fake_library(self, where, *sources):
        subprocess.run([os.environ.get("CC", "gcc"), "-shared", "-fPIC", "-o", str(where / "libcurl.so.4"),
                        "-Wl,-soname,libcurl.so.4"] + [str(where / src) for src in sources], check=True)


class ConfigErrors(HttpSinkCase):
    def expect_refusal(self, option, **opts):
        base = {"http_url": "http://127.0.0.1:9/hook"}
        base.update(opts)
        with self.assertRaises(BrokerError) as cm:
            self.start_broker(["allow_anonymous true"], plugin_opts=base)
        self.assertNotEqual(cm.exception.returncode, 0)
        self.assertIn(f"plugin_opt_{option}", cm.exception.log)
        return cm.exception.log

    def test_refused_at_start(self):
        with self.subTest("scheme"):
            self.expect_refusal("http_url", http_url="ftp://127.0.0.1/x")
        with self.subTest("not a url"):
            self.expect_refusal("http_url", http_url="http://")
        for bad in ("http://alice:Zq9@Wv7@127.0.0.1:9/hook", "http://alice:Zq9/Wv7@127.0.0.1:9/hook",
                    "http://alice:Zq9#Wv7@127.0.0.1:9/hook", "http://alice:Zq9?Wv7@127.0.0.1:9/hook"):
            with self.subTest("unescaped password", url=bad):
                # Neither the password nor the host: which part is which
                # is what failed to parse.
                log = self.expect_refusal("http_url", http_url=bad)
                self.assertRegex(log, r"plugin_opt_http_url: 'http://\*\*\*' is not a valid URL \([^;]+; the rest "
                                      r"is not shown: in a user name or password, write : / \? # @ and % as %XX\)")
                for part in ("alice", "Zq9", "Wv7", "127.0.0.1"):
                    self.assertNotIn(part, log)
        with self.subTest("token file"):
            self.expect_refusal("http_bearer_token_file", http_bearer_token_file=self.tmp / "missing")
        with self.subTest("secret file"):
            (self.tmp / "bad").write_text("whsec_***")
            self.expect_refusal("http_signing_secret_file", http_signing_secret_file=self.tmp / "bad")
        with self.subTest("ca file"):
            self.expect_refusal("http_ca_file", http_ca_file=self.tmp / "missing.pem")
        with self.subTest("client cert"):
            self.expect_refusal("http_client_cert", http_client_cert=self.tmp / "missing.pem")
        with self.subTest("header"):
            log = self.expect_refusal("http_header", http_header="X-Key secret-value")
            self.assertNotIn("secret-value", log)
        for header in ("X-Empty:", "User-Agent: \t "):
            with self.subTest("empty header value", header=header):
                log = self.expect_refusal("http_header", http_header=header)
                name = header.split(":")[0]
                self.assertIn(f"eventhook: configuration error: plugin_opt_http_header: header 1 ({name}) has an empty "
                              f"value, which libcurl would take as \"remove this header\"", log)
        with self.subTest("ndjson cloudevents"):
            self.expect_refusal("http_batch_format", http_batch_format="ndjson", http_format="cloudevents")


if __name__ == "__main__":
    unittest.main()
