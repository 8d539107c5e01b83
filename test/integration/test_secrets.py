"""No secret ever leaves the plugin except to the peer it is meant for, and
TLS peers are verified unless the insecure option says otherwise.

Every secret the plugin can be given is set to a recognisable marker
(``EHMARK-...``): the HTTP bearer token, signing secret and header values,
the MQTT sink's password, the Kafka SASL password (from a file and inline
as plugin_opt_kafka.sasl.password), URL user information and query, and
the passwords MQTT clients send to the broker. The secrets are then
exercised, on their good and their error paths (wrong credentials,
rejected requests, a server that echoes the request, failed reloads,
configuration errors), and everything the runs produced is searched for
the markers, raw and base64-encoded: broker logs and stdout/stderr, event
files, every HTTP body and header except the ones that carry a secret by
design (Authorization, the configured header), every MQTT message
(events, presence, $SYS/broker/eventhook statistics), every Kafka message
(values, keys, headers). Any hit fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import (MQTTV5, MQTTV311, TIMEOUT, BrokerError, BrokerTestCase,  # noqa: E402
                        Collector, RawClient, wait_until, write_password_file)
from eh_rel import (SilentServer, make_pki, mock_kafka, quiet_client_session,  # noqa: E402
                    server_tls, stopped_counters)
from http_peer import HttpPeer, Reply, server_context  # noqa: E402

MARKERS = {
    "bearer": "EHMARK-bearer-51c2",
    "signing": "EHMARK-signing-8e07",
    "header": "EHMARK-header-3b9d",
    "mqtt_sink_password": "EHMARK-mqttpw-a4e1",
    "mqtt_sink_wrong_password": "EHMARK-mqttwrong-26bf",
    "kafka_file": "EHMARK-kafkapw-77f0",
    "kafka_inline": "EHMARK-kafkainline-1d3c",
    "url_user": "EHMARK-urlpw-5e8a",
    "url_query": "EHMARK-urlquery-0c47",
    "client": "EHMARK-clientpw-90ab",
    "client_wrong": "EHMARK-clientbad-c3d5",
    "config_error": "EHMARK-configerr-f1e2",
}


def needles(secret: str) -> List[bytes]:
    """The secret, and the parts of its base64 encoding that do not depend
    on what precedes it (three alignments)."""
    out = [secret.encode()]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + secret.encode())
        # Skip the characters mixed with the padding bytes and the tail
        # mixed with what follows.
        start = (pad * 4 + 2) // 3 + 1
        out.append(enc[start:start + 16])
    return out


ALL_NEEDLES = [(name, n) for name, s in MARKERS.items() for n in needles(s)] + [("any", b"EHMARK")]


class Exhibits:
    """Everything a run produced, by where it came from."""

    def __init__(self):
        self.items: List[Tuple[str, bytes]] = []

    def add(self, where: str, data) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        self.items.append((where, bytes(data)))

    def add_file(self, where: str, path) -> None:
        try:
            self.add(where, Path(path).read_bytes())
        except FileNotFoundError:
            pass

    def hits(self) -> List[str]:
        out = []
        for where, data in self.items:
            for name, needle in ALL_NEEDLES:
                if needle in data:
                    i = data.index(needle)
                    out.append(f"{name} in {where}: ...{data[max(0, i - 80):i + 80]!r}...")
        return out


class SecretsCase(BrokerTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="eh-secrets-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.exhibits = Exhibits()

    def secret_file(self, name: str, value: str) -> str:
        p = self.tmp / name
        p.write_text(value + "\n")
        p.chmod(0o600)
        return str(p)

    def collect_broker(self, b) -> None:
        """The broker's log and output, and every file it wrote in its
        directory except its configuration (which names secrets by design
        when a test writes one inline)."""
        for f in sorted(b.dir.iterdir()):
            if f.is_file() and f.name != "mosquitto.conf":
                self.exhibits.add_file(f"{b.name}/{f.name}", f)

    def assert_no_leak(self) -> None:
        hits = self.exhibits.hits()
        self.assertEqual(hits, [], "secrets found:\n" + "\n".join(hits))
        self.assertGreater(len(self.exhibits.items), 0)


class NoSecretLeaves(SecretsCase):
    def test_every_secret_everywhere(self):
        m = MARKERS
        # The peers. The MQTT target accepts the sink's user only with the
        # right password.
        http = HttpPeer()
        self.addCleanup(http.stop)
        # A rejection, a server that echoes the request it got (Authorization
        # included) in its error body, a retry, then success.
        echo = json.dumps({"error": "bad request", "you sent": {
            "authorization": f"Bearer {m['bearer']}", "x-api-key": m["header"]}}).encode()
        http.script(Reply(401, body=b"unauthorized"), Reply(400, body=echo),
                    Reply(500, body=b"try again"))
        kafka = mock_kafka()
        self.addCleanup(kafka.close)
        target_pw = write_password_file(self.tmp / "target.pw", {"sink": m["mqtt_sink_password"],
                                                                 "reader": "reader-pw"})
        target = self.start_broker(["allow_anonymous false", f"password_file {target_pw}"],
                                   plugin=False, name="target")
        target_sub = Collector(target.port, ["#"], username="reader", password="reader-pw",
                               client_id="target-reader")
        self.addCleanup(target_sub.close)

        # The broker under test: clients authenticate with passwords.
        broker_pw = write_password_file(self.tmp / "broker.pw", {"dev": m["client"], "watch": "watch-pw"})
        opts = [
            ("node_id", "secrets"), ("events", "*"), ("stats_interval", 1),
            ("file_path", "{dir}/events.jsonl"),
            ("local_topic", "$events/{event}/{clientid}"),
            ("http_url", http.url), ("http_retry_initial_ms", 20), ("http_retry_max_ms", 100),
            ("http_bearer_token_file", self.secret_file("token", m["bearer"])),
            ("http_signing_secret_file", self.secret_file("signing", m["signing"])),
            ("http_header", f"X-Api-Key: {m['header']}"),
            ("mqtt_uri", f"tcp://127.0.0.1:{target.port}"), ("mqtt_username", "sink"),
            ("mqtt_password_file", self.secret_file("mqtt.pw", m["mqtt_sink_password"])),
            ("mqtt_presence_topic", "presence/{clientid}"), ("mqtt_protocol", "5"),
            ("kafka_brokers", kafka.bootstrap),
            ("kafka.debug", "security,broker,conf,protocol"),
            ("kafka.sasl.username", "eh"),
            ("kafka_sasl_password_file", self.secret_file("kafka.pw", m["kafka_file"])),
        ]
        b = self.start_broker(["allow_anonymous false", f"password_file {broker_pw}"],
                              plugin_opts=opts, name="main")
        watcher = Collector(b.port, ["$events/#", "$SYS/broker/eventhook/#"], username="watch",
                            password="watch-pw", client_id="watcher")
        self.addCleanup(watcher.close)

        # Clients: right and wrong passwords, both protocol versions.
        for i, (pw, proto) in enumerate([(m["client"], MQTTV311), (m["client_wrong"], MQTTV311),
                                         (m["client"], MQTTV5), (m["client_wrong"], MQTTV5)]):
            c = RawClient(b.port, f"cl{i}", proto)
            rc = c.connect(username="dev", password=pw).rc
            self.assertEqual(rc == 0, pw == m["client"], (i, rc))
            if rc == 0:
                c.publish("data/x", b"payload %d" % i, qos=1)
                c.disconnect()
            c.close()
        # A failed reload of the token (file gone): logged, old token kept.
        os.rename(self.tmp / "token", self.tmp / "token.moved")
        b.sighup()
        wait_until(lambda: "keeping the previous token" in b.log(), message="the failed reload")
        os.rename(self.tmp / "token.moved", self.tmp / "token")
        self.assertEqual(quiet_client_session(b.port, "sentinel", username="dev", password=m["client"]), 0)

        http.wait_events(lambda evs: any(e["clientid"] == "sentinel" and e["event"] == "client.disconnected"
                                         for e in evs), what="the sentinel over HTTP")
        target_sub.wait_messages(lambda ms: any(x.topic.endswith("/client.disconnected/sentinel")
                                                for x in ms))
        watcher.wait_messages(lambda ms: any(x.topic.startswith("$SYS/broker/eventhook/") for x in ms)
                              and any(x.topic == "$events/client.disconnected/sentinel" for x in ms))
        b.stop()
        target.stop()

        counts = stopped_counters(b.log())
        self.assertEqual(sorted(counts), ["file", "http", "kafka", "local", "mqtt"])
        statuses = [r.status for r in http.requests]
        self.assertEqual(statuses[:3], [401, 400, 500])
        self.assertEqual(counts["http"]["failed"], 2)  # the 401 and the 400
        for r in http.requests:
            self.assertEqual(r.headers["authorization"], f"Bearer {m['bearer']}")
            self.assertEqual(r.headers["x-api-key"], m["header"])
            for k, v in r.header_list:
                if k.lower() not in ("authorization", "x-api-key"):
                    self.exhibits.add(f"http header {k}", v)
            self.exhibits.add(f"http body (status {r.status})", r.body)
        for x in target_sub.messages:
            self.exhibits.add(f"target message {x.topic}", x.topic.encode() + b" " + x.payload)
        for x in watcher.messages:
            self.exhibits.add(f"local message {x.topic}", x.topic.encode() + b" " + x.payload)
        msgs = kafka.consume(["mqtt-events"], counts["kafka"]["delivered"], parse=False)
        self.assertEqual(len(msgs), counts["kafka"]["delivered"])
        for x in msgs:
            self.exhibits.add("kafka message", json.dumps(x))
        self.collect_broker(b)
        self.collect_broker(target)
        self.assertIn("http: HTTP 400", b.log())
        self.assertTrue(any(x.topic.startswith("presence/") for x in target_sub.messages))
        self.assert_no_leak()


class ErrorPaths(SecretsCase):
    def test_configuration_errors(self):
        """Refused configurations name the key, never the secret value."""
        m = MARKERS["config_error"]
        pw = self.secret_file("kafka.pw", MARKERS["kafka_file"])
        empty = self.tmp / "empty"
        empty.write_text("")
        cases = {
            "bad header name": [("http_url", "http://127.0.0.1:1/"), ("http_header", f"X Bad: {m}")],
            "reserved header": [("http_url", "http://127.0.0.1:1/"), ("http_header", f"Content-Type: {m}")],
            "header, bad url": [("http_url", f"ftp://u:{m}@h/?k={m}"), ("http_header", f"X-K: {m}")],
            "url secrets, bad timeout": [("http_url", f"http://u:{m}@127.0.0.1:1/h?k={m}"),
                                         ("http_timeout_ms", "0")],
            "misspelt key": [("file_path", "{dir}/e"), ("http_headr", f"X-Api-Key: {m}")],
            "header given twice": [("file_path", "{dir}/e"), ("http_url", "http://127.0.0.1:1/"),
                                   ("http_url", f"http://127.0.0.1:1/?{m}")],
            "kafka password twice": [("kafka_brokers", "127.0.0.1:1"), ("kafka.sasl.password", m),
                                     ("kafka_sasl_password_file", pw)],
            "kafka bad property": [("kafka_brokers", "127.0.0.1:1"), ("kafka.sasl.password", m),
                                   ("kafka.acks", "maybe")],
            "kafka sink disabled": [("file_path", "{dir}/e"), ("kafka.sasl.password", m)],
            "mqtt empty password file": [("mqtt_uri", "tcp://127.0.0.1:1"), ("mqtt_username", "u"),
                                         ("mqtt_password_file", str(empty))],
            "mqtt password, no user": [("mqtt_uri", "tcp://127.0.0.1:1"),
                                       ("mqtt_password_file", self.secret_file("mqtt.pw", m))],
        }
        for name, opts in cases.items():
            with self.subTest(name):
                with self.assertRaises(BrokerError) as cm:
                    self.start_broker(["allow_anonymous true"], plugin_opts=opts, name=name.replace(" ", "-"))
                self.assertIn("plugin_opt_", cm.exception.log)
                self.exhibits.add(f"{name}: broker log and output", cm.exception.log)
        for b in self._eh_brokers():
            self.collect_broker(b)
        self.assert_no_leak()

    def test_runtime_failures(self):
        """Wrong credentials and unreachable peers, with every secret set:
        the HTTP URL carries user information and a query, the MQTT
        target refuses the password, Kafka is asked for SASL with an
        inline password (allowed, though a file is recommended) and its
        security debug log on, a Kafka TLS key that is not PEM."""
        m = MARKERS
        target_pw = write_password_file(self.tmp / "target.pw", {"sink": "the-right-one"})
        target = self.start_broker(["allow_anonymous false", f"password_file {target_pw}"],
                                   plugin=False, name="target")
        kafka = mock_kafka()
        self.addCleanup(kafka.close)
        refused = SilentServer()
        refused.close()  # a port nobody listens on
        b = self.start_broker(["allow_anonymous true"], plugin_opts=[
            ("node_id", "wrong"), ("stats_interval", 1), ("shutdown_timeout_ms", 0),
            ("http_url", f"http://sink:{m['url_user']}@127.0.0.1:{refused.port}/h?key={m['url_query']}"),
            ("http_retry_initial_ms", 20), ("http_retry_max_ms", 50),
            ("mqtt_uri", f"tcp://127.0.0.1:{target.port}"), ("mqtt_username", "sink"),
            ("mqtt_password_file", self.secret_file("mqtt.pw", m["mqtt_sink_wrong_password"])),
            ("kafka_brokers", kafka.bootstrap), ("kafka.security.protocol", "sasl_plaintext"),
            ("kafka.sasl.mechanisms", "PLAIN"), ("kafka.sasl.username", "eh"),
            ("kafka.sasl.password", m["kafka_inline"]), ("kafka.debug", "security,broker,conf"),
        ], name="wrong")
        b2 = self.start_broker(["allow_anonymous true"], plugin_opts=[
            ("node_id", "badkey"), ("shutdown_timeout_ms", 0),
            ("kafka_brokers", kafka.bootstrap), ("kafka.security.protocol", "ssl"),
            ("kafka.ssl.key.pem", m["config_error"]), ("kafka.ssl.key.password", m["kafka_inline"]),
            ("kafka.debug", "security,conf"),
        ], name="badkey")
        for broker in (b, b2):
            self.assertEqual(quiet_client_session(broker.port, "c0"), 0)
        wait_until(lambda: "http: " in b.log() and "; retrying" in b.log(), message="HTTP failure")
        wait_until(lambda: f"mqtt: cannot connect to tcp://127.0.0.1:{target.port}" in b.log(),
                   message="MQTT refusal")
        wait_until(lambda: "Failed to initialize SASL authentication" in b.log(), message="Kafka SASL failure")
        wait_until(lambda: "kafka: " in b2.log(), message="Kafka TLS key refused")
        self.assertIn("http://***@127.0.0.1", b.log())
        for broker in (b, b2, target):
            broker.stop()
            self.collect_broker(broker)
        self.assert_no_leak()


class TlsVerifiedByDefault(SecretsCase):
    """Each network sink refuses a server with a self-signed certificate
    unless its insecure option is set (and then it logs a warning)."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = Path(tempfile.mkdtemp(prefix="eh-pki-"))
        make_pki(cls.pki_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, True)

    def pki(self, name):
        return str(self.pki_dir / name)

    def test_http(self):
        for insecure in (False, True):
            with self.subTest(insecure=insecure):
                peer = HttpPeer(tls=server_context(self.pki("selfsigned.crt"), self.pki("selfsigned.key")))
                self.addCleanup(peer.stop)
                opts = {"node_id": "tls", "http_url": peer.url, "http_retry_initial_ms": 20,
                        "http_retry_max_ms": 100, "shutdown_timeout_ms": 0, "stats_interval": 0}
                if insecure:
                    opts["http_tls_insecure"] = "true"
                    # The peer has the events before the sink has read the
                    # response that makes them delivered: let the stop wait
                    # for it instead of racing it.
                    opts["shutdown_timeout_ms"] = 10000
                b = self.start_broker(["allow_anonymous true"], plugin_opts=opts, name=f"http-{insecure}")
                self.assertEqual(quiet_client_session(b.port, "c0"), 0)
                if insecure:
                    peer.wait_events(lambda evs: len(evs) == 3)
                    self.assertIn("certificate is NOT verified", b.log())
                else:
                    wait_until(lambda: peer.tls_failures >= 1 and "; retrying" in b.log(),
                               message="the refused certificate")
                    self.assertEqual(peer.requests, [])
                b.stop()
                c = stopped_counters(b.log())["http"]
                self.assertEqual(c["delivered"], 3 if insecure else 0)

    def test_mqtt(self):
        for insecure in (False, True):
            with self.subTest(insecure=insecure):
                tls_port = SilentServer()
                tls_port.close()
                target = self.start_broker(
                    ["allow_anonymous true", f"listener {tls_port.port} 127.0.0.1",
                     f"certfile {self.pki('selfsigned.crt')}", f"keyfile {self.pki('selfsigned.key')}"],
                    plugin=False, name=f"target-{insecure}")
                sub = Collector(target.port, ["eventhook/#"], client_id="sub")
                self.addCleanup(sub.close)
                opts = {"node_id": "tls", "mqtt_uri": f"ssl://127.0.0.1:{tls_port.port}",
                        "shutdown_timeout_ms": 0, "stats_interval": 0, "mqtt_reconnect_max": 1}
                if insecure:
                    opts["mqtt_tls_insecure"] = "true"
                    # The subscriber can have the third event before the
                    # sink has its PUBACK: let the stop wait for it.
                    opts["shutdown_timeout_ms"] = 10000
                b = self.start_broker(["allow_anonymous true"], plugin_opts=opts, name=f"mqtt-{insecure}")
                self.assertEqual(quiet_client_session(b.port, "c0"), 0)
                if insecure:
                    sub.wait_messages(3)
                    self.assertIn("is NOT verified", b.log())
                else:
                    wait_until(lambda: f"mqtt: cannot connect to ssl://127.0.0.1:{tls_port.port}" in b.log(),
                               message="the refused certificate")
                b.stop()
                c = stopped_counters(b.log())["mqtt"]
                self.assertEqual(c["delivered"], 3 if insecure else 0)
                if not insecure:
                    self.assertEqual(sub.messages, [])

    def test_kafka(self):
        """A TLS listener that never speaks Kafka: whether librdkafka
        completed the handshake shows whether it accepted the certificate."""
        for insecure in (False, True):
            with self.subTest(insecure=insecure):
                srv = SilentServer(tls=server_tls(self.pki_dir / "selfsigned.crt",
                                                  self.pki_dir / "selfsigned.key"))
                self.addCleanup(srv.close)
                opts = [("node_id", "tls"), ("kafka_brokers", f"127.0.0.1:{srv.port}"),
                        ("kafka.security.protocol", "ssl"), ("shutdown_timeout_ms", 0),
                        ("stats_interval", 0)]
                if insecure:
                    opts.append(("kafka.enable.ssl.certificate.verification", "false"))
                b = self.start_broker(["allow_anonymous true"], plugin_opts=opts, name=f"kafka-{insecure}")
                self.assertEqual(quiet_client_session(b.port, "c0"), 0)
                if insecure:
                    wait_until(lambda: srv.handshakes_ok >= 1, message="a completed handshake")
                else:
                    wait_until(lambda: srv.handshakes_failed >= 1, message="a refused handshake")
                    self.assertEqual(srv.handshakes_ok, 0)
                b.stop()


if __name__ == "__main__":
    unittest.main()
