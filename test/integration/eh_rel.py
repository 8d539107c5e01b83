"""Shared pieces of the reliability tests (test_faults.py, test_secrets.py),
the soak run (test/soak.py) and the valgrind scenario (test/valgrind/).

* ``stopped_counters(log)``: the per-sink counters of the shutdown lines
  ("eventhook: <sink>: stopped; enqueued N, delivered N, ...").
* ``vm_rss_kib(pid)``: resident memory of a process, from /proc.
* ``flood_qos0(port, ...)``: a raw-socket client that sends many QoS 0
  PUBLISH packets as fast as the broker reads them, then proves with a
  PINGREQ/PINGRESP that the broker has handled every one.
* ``SilentServer``: a TCP listener that accepts and never answers (a peer
  that hangs), optionally doing a TLS handshake first and counting its
  outcomes (to see whether a client refused our certificate).
* ``make_pki(dir)``: a test CA, a server certificate signed by it, and a
  self-signed server certificate (openssl CLI).
* ``AllPeers``: one local peer per network sink (HttpPeer, librdkafka's mock
  cluster through build/test/kafka_peer, a plugin-free mosquitto as MQTT
  target) and the plugin options that point all five sinks at them.

Standard library only (plus the harness and the sink tests' peers).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Dict, List, Optional

from eh_harness import (TIMEOUT, Broker, RawClient, encode_connect, encode_packet,
                        encode_pingreq, encode_publish)
from http_peer import HttpPeer, decode_events

STOPPED_RE = re.compile(r"eventhook: (\w+): stopped; enqueued (\d+), delivered (\d+), failed (\d+), "
                        r"dropped (\d+), left undelivered at shutdown (\d+)")
COUNTER_NAMES = ("enqueued", "delivered", "failed", "dropped", "left")


def stopped_counters(log: str) -> Dict[str, Dict[str, int]]:
    """{sink: {enqueued, delivered, failed, dropped, left}} from the last
    shutdown line of each sink in a broker log."""
    out: Dict[str, Dict[str, int]] = {}
    for m in STOPPED_RE.finditer(log):
        out[m.group(1)] = dict(zip(COUNTER_NAMES, map(int, m.groups()[1:])))
    return out


def vm_rss_kib(pid: int) -> int:
    """VmRSS of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def flood_qos0(port: int, count: int, client_id: str = "flood", topic: str = "flood/t",
               payload: bytes = b"x", chunk: int = 4096, sock: Optional[socket.socket] = None,
               timeout: float = TIMEOUT * 3) -> socket.socket:
    """Connect (unless ``sock`` is an already connected socket) and send
    ``count`` QoS 0 PUBLISH packets, then a PINGREQ, and wait for the
    PINGRESP: the broker handles one connection's packets in order, so once
    it answers, every PUBLISH before it was processed. Returns the socket
    (still connected) so that the caller can flood again or close it."""
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        sock.sendall(encode_connect(client_id, keepalive=0))
        _read_packet(sock)  # CONNACK
    packet = encode_publish(topic, payload, 0)
    block = packet * chunk
    sent = 0
    while sent + chunk <= count:
        sock.sendall(block)
        sent += chunk
    if sent < count:
        sock.sendall(packet * (count - sent))
    sock.sendall(encode_pingreq())
    while True:
        ptype = _read_packet(sock)
        if ptype == 13:  # PINGRESP
            return sock


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("broker closed the connection")
        buf += part
    return buf


def _read_packet(sock: socket.socket) -> int:
    head = _read_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:
        b = _read_exact(sock, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    if length:
        _read_exact(sock, length)
    return head >> 4


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (with
    ``tls``, after the handshake). ``accepted`` counts connections;
    ``handshakes_ok`` / ``handshakes_failed`` count TLS handshake outcomes."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None):
        self.tls = tls
        self.accepted = 0
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            if self.tls:
                threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(TIMEOUT)
            tconn = self.tls.wrap_socket(conn, server_side=True)  # type: ignore[union-attr]
            # A client that refuses our certificate sends an alert during
            # the handshake (TLS 1.2) or right after it (TLS 1.3): read once
            # to see which.
            tconn.settimeout(2)
            try:
                tconn.recv(1)
            except socket.timeout:
                pass
            ok = True
        except (ssl.SSLError, OSError):
            ok = False
        with self._lock:
            if ok:
                self.handshakes_ok += 1
            else:
                self.handshakes_failed += 1

    def close(self) -> None:
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(5)


def make_pki(d: Path) -> Path:
    """In ``d``: ca.crt/ca.key, server.crt/server.key (signed by the CA, for
    localhost and 127.0.0.1) and selfsigned.crt/selfsigned.key (its own
    issuer, also for localhost and 127.0.0.1). World-readable, so that a
    broker that dropped privileges can read them."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=eventhook reliability test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "selfsigned.key", "-out",
        "selfsigned.crt", "-days", "2", "-subj", "/CN=localhost", "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1")
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return d


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def mock_kafka(brokers: int = 1, topics=()):
    """librdkafka's mock cluster (test_kafka.MockKafka); skips when
    build/test/kafka_peer is not built. Imported late and by module so that
    the loader does not collect test_kafka's tests a second time here."""
    import test_kafka
    return test_kafka.MockKafka(brokers=brokers, topics=topics)


class AllPeers:
    """A local peer for each network sink, and options enabling all five
    sinks against them:

    * file: ``<dir>/events.jsonl``
    * local: ``$events/{event}/{clientid}`` in the broker itself
    * http: an HttpPeer (answers 200)
    * kafka: librdkafka's mock cluster (topic ``mqtt-events``, created with
      ``kafka_partitions`` partitions when given, else by the first produce)
    * mqtt: a plugin-free mosquitto (``target``), topic
      ``eventhook/{node}/{event}/{clientid}``

    A long run calls ``forget_http()`` now and then, so that the HTTP
    peer does not hold every request body in memory; it still counts them.
    """

    def __init__(self, kafka: bool = True, kafka_partitions: int = 0):
        self.http = HttpPeer()
        self.http_count = 0
        self.kafka = None
        self.target = None
        topics = [("mqtt-events", kafka_partitions)] if kafka_partitions else []
        try:
            self.kafka = mock_kafka(topics=topics) if kafka else None
            self.target = Broker(["allow_anonymous true"], plugin=False, name="mqtt-target")
        except BaseException:
            self.close()
            raise

    def forget_http(self) -> int:
        """Drop the recorded HTTP requests; return how many events the
        2xx-answered ones carried in total so far."""
        with self.http._cond:  # the peer's own lock
            done = [r for r in self.http.requests if r.status]
            self.http_count += sum(len(decode_events(r)) for r in done if 200 <= r.status < 300)
            self.http.requests = [r for r in self.http.requests if not r.status]
        return self.http_count

    def options(self, events: str = "client.*", node: str = "rel") -> Dict[str, str]:
        opts = {
            "node_id": node,
            "events": events,
            "file_path": "{dir}/events.jsonl",
            "local_topic": "$events/{event}/{clientid}",
            "http_url": self.http.url,
            "http_batch_max": "50",
            "http_retry_initial_ms": "50",
            "http_retry_max_ms": "500",
            "mqtt_uri": f"tcp://127.0.0.1:{self.target.port}",  # type: ignore[union-attr]
            "mqtt_reconnect_min": "1",
            "mqtt_reconnect_max": "2",
        }
        if self.kafka is not None:
            opts["kafka_brokers"] = self.kafka.bootstrap
        return opts

    def close(self) -> None:
        self.http.stop()
        if self.kafka is not None:
            self.kafka.close()
        if self.target is not None:
            self.target.cleanup()


def quiet_client_session(port: int, client_id: str, **connect) -> int:
    """Connect, disconnect; return the CONNACK code."""
    c = RawClient(port, client_id)
    try:
        rc = c.connect(**connect).rc
        if rc == 0:
            c.disconnect()
        return rc
    finally:
        c.close()


__all__ = ["stopped_counters", "vm_rss_kib", "flood_qos0", "SilentServer", "make_pki",
           "server_tls", "mock_kafka", "AllPeers", "quiet_client_session", "COUNTER_NAMES",
           "encode_packet"]
