#!/usr/bin/python3
"""Benchmark of the HTTP sink (not a test; run by `make bench`).

1. Delivery rate: a client publishes N QoS 0 messages (mosquitto_pub -l)
   to a broker whose HTTP sink posts message.publish events to a local
   Python server; we time from the first publish to the last event counted
   by the server, for several http_batch_max values.  Baseline in the same
   run: curl's own request rate (one curl process, one kept-alive
   connection, the same body size) against the same server, so the figures
   say how close the sink gets to what that server can take.
2. Broker overhead: connect/subscribe/disconnect cycles per second from a
   raw-socket client, with the HTTP sink on (every client.* event posted)
   versus no plugin, as a ratio.

    /usr/bin/python3 bench/bench_http.py [--events N] [--cycles N]

Prints a Markdown table; docs/performance-http.md records a run.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test" / "integration"))

import eh_harness as H  # noqa: E402


class CountingServer:
    """Answers 204 to every POST and counts events (objects with "event")."""

    def __init__(self):
        self.events = 0
        self.requests = 0
        self.target = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                n = body.count(b'"event":')
                with srv.lock:
                    srv.events += n
                    srv.requests += 1
                    if srv.target is not None and srv.events >= srv.target:
                        srv.done.set()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.daemon_threads = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/bench"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def expect(self, n):
        with self.lock:
            self.events = 0
            self.requests = 0
            self.target = n
            self.done.clear()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def curl_rate(server, n, body):
    """Requests per second of one curl process reusing one connection."""
    with tempfile.TemporaryDirectory() as d:
        body_path = Path(d) / "body.json"
        body_path.write_bytes(body)
        cfg = Path(d) / "curl.cfg"
        cfg.write_text("".join(f'url = "{server.url}"\n' for _ in range(n)))
        server.expect(n)
        t0 = time.monotonic()
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Content-Type: application/json",
                        "--data-binary", f"@{body_path}", "-K", str(cfg)], check=True,
                       env={**os.environ, "no_proxy": "*"})
        dt = time.monotonic() - t0
        if server.requests != n:
            raise RuntimeError(f"curl: {server.requests} of {n} requests arrived")
    return n / dt


def delivery_rate(server, n, batch_max, fmt="json"):
    broker = H.Broker(["allow_anonymous true"], name=f"bench-http-{batch_max}", plugin_opts={
        "http_url": server.url, "events": "message.publish", "http_batch_max": batch_max,
        "http_batch_format": fmt, "queue_size": max(65536, n), "stats_interval": 0})
    try:
        lines = "\n".join(f"m{i:07d}" for i in range(n)) + "\n"
        server.expect(n)
        t0 = time.monotonic()
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", "bench/t", "-q", "0", "-l"],
                       input=lines.encode(), check=True)
        if not server.done.wait(300):
            raise RuntimeError(f"only {server.events} of {n} events arrived")
        dt = time.monotonic() - t0
        requests = server.requests
        broker.stop()
        if "dropped 0," not in broker.log():
            raise RuntimeError("events were dropped: " + broker.log()[-400:])
        return n / dt, requests
    finally:
        broker.cleanup()


def cycles_rate(port, n):
    """connect / subscribe / disconnect cycles per second, one at a time."""
    sub = H.encode_subscribe(1, [("bench/#", 0)])
    disc = H.encode_disconnect()
    t0 = time.monotonic()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(H.encode_connect(f"b{i}"))
        _recv_exact(s, 4)   # CONNACK
        s.sendall(sub)
        _recv_exact(s, 5)   # SUBACK
        s.sendall(disc)
        while s.recv(64):   # the broker closes after DISCONNECT
            pass
        s.close()
    return n / (time.monotonic() - t0)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def overhead(server, cycles):
    """Cycle rates: no plugin; the plugin with only the file sink writing to
    /dev/null (the capture cost alone); the HTTP sink sending at once
    (linger 0) and batching for 50 ms."""
    variants = [
        ("off", None),
        ("file /dev/null", {"file_path": "/dev/null", "events": "client.*"}),
        ("http linger 0", {"http_url": server.url, "http_batch_max": 100, "events": "client.*"}),
        ("http linger 50", {"http_url": server.url, "http_batch_max": 100, "http_batch_linger_ms": 50,
                            "events": "client.*"}),
    ]
    rates = {}
    for name, opts in variants:
        if opts:
            opts = dict(opts, stats_interval=0)
        broker = H.Broker(["allow_anonymous true"], plugin=opts is not None, plugin_opts=opts,
                          name="bench-cycles")
        try:
            cycles_rate(broker.port, min(200, cycles))  # warm-up
            best = 0.0
            for _ in range(3):
                best = max(best, cycles_rate(broker.port, cycles))
            rates[name] = best
        finally:
            broker.cleanup()
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--cycles", type=int, default=1000)
    args = ap.parse_args()
    if not shutil.which("curl"):
        sys.exit("bench_http: the curl command is needed for the baseline (apt-get install curl)")
    server = CountingServer()
    try:
        sample = (b'{"event":"message.publish","id":"0b5b85e2-a7b2-85fa-8000-000000000001",'
                  b'"ts":"2026-11-26T05:49:45.498Z","node":"vm","seq":1,"clientid":"auto-1234",'
                  b'"peer":"127.0.0.1","protocol":"mqtt","proto_ver":4,"topic":"bench/t","qos":0,'
                  b'"retain":false,"payload":"bTAwMDAwMDE="}')
        n_curl = max(1000, args.events // 10)
        curl = max(curl_rate(server, n_curl, sample) for _ in range(3))
        print(f"cores: {os.cpu_count()}")
        print(f"baseline: curl, one kept-alive connection, best of 3 x {n_curl} POSTs of one event: {curl:,.0f} requests/s\n")
        print("| http_batch_max | events | requests | events/s | events/s ÷ curl requests/s |")
        print("|---:|---:|---:|---:|---:|")
        for batch in (1, 10, 100):
            n = args.events if batch > 1 else max(2000, args.events // 10)
            rate, reqs = delivery_rate(server, n, batch)
            print(f"| {batch} | {n} | {reqs} | {rate:,.0f} | {rate / curl:.2f} |")
        rate, reqs = delivery_rate(server, args.events, 100, "ndjson")
        print(f"| 100 (ndjson) | {args.events} | {reqs} | {rate:,.0f} | {rate / curl:.2f} |")
        r = overhead(server, args.cycles)
        print(f"\nconnect/subscribe/disconnect cycles/s, best of 3 x {args.cycles} (3 events per cycle):\n")
        print("| broker | cycles/s | ratio to plugin off |")
        print("|---|---:|---:|")
        for name, rate in r.items():
            print(f"| {name} | {rate:,.0f} | {rate / r['off']:.2f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
