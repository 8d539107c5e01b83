"""A programmable HTTP(S) server for the HTTP sink's tests and benchmark.

``HttpPeer`` listens on 127.0.0.1 (a free port, or a given one so a test can
start it late on the port the broker was told about), answers every request
on its own thread, and records what it received:

* ``requests``: one ``Request`` per request, in arrival order, with the
  method, path, headers, body, the client's source port (``conn``; the same
  port means the same kept-alive connection), the status it was answered
  with and, for TLS, the client certificate's subject.
* Responses are scripted: ``script(Reply(...), ...)`` queues replies used
  one per request in order; when the queue is empty ``default`` answers
  (200 unless changed).  A ``Reply`` can delay, carry headers such as
  Retry-After, or ``hang`` (accept, read, never answer until the peer is
  stopped or ``release()`` is called).
* ``delivered_events()`` decodes the bodies that were answered 2xx into
  the list of event objects, whatever the format (object, array, NDJSON,
  CloudEvents).

TLS: pass an ``ssl.SSLContext`` (see ``server_context``).  The handshake is
done on the request's thread, so a client that fails it does not stall the
others; failures are counted in ``tls_failures``.

Only the standard library is used.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional


@dataclass
class Reply:
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0   # seconds before answering
    hang: bool = False   # never answer (until release() or stop())
    echo: bool = False   # the body is the request line and headers as received (a debug endpoint)


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str]  # lower-case names
    header_list: List[tuple]
    body: bytes
    conn: int                # the client's source port
    status: int = 0          # what it was answered (0: not answered)
    client_cert: Optional[dict] = None
    t: float = 0.0           # time.monotonic() at arrival

    def json(self):
        return json.loads(self.body)


def server_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    """A server-side TLS context; with client_ca, client certificates are
    required and verified against it (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        # Refused handshakes and clients going away are expected in tests
        # (and counted); anything else is printed as usual.
        import sys
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, OSError)):
            return
        super().handle_error(request, client_address)


class HttpPeer:
    def __init__(self, port: int = 0, tls: Optional[ssl.SSLContext] = None, start: bool = True):
        self.port = port
        self.tls = tls
        self.default = Reply()
        # A body larger than this (by its Content-Length) is answered 413
        # Payload Too Large, as a server with a body size limit does; with
        # refuse_early the answer comes before the body is read and the
        # connection is closed with the body unread (many frameworks), else
        # the body is read and dropped first (nginx's lingering close).
        self.max_body: Optional[int] = None
        self.refuse_early = False
        self.requests: List[Request] = []
        self.tls_failures = 0
        self.connections = set()
        self._script: List[Reply] = []
        self._socks = set()
        self._stopping = False
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    # -- scripting -----------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        with self._cond:
            self._script.extend(replies)

    def release(self) -> None:
        """Lets every hanging request go (they are then closed unanswered)."""
        self._release.set()

    def _next_reply(self) -> Reply:
        with self._cond:
            return self._script.pop(0) if self._script else self.default

    # -- observing -----------------------------------------------------------

    def wait(self, predicate, timeout: float = 20.0, what: str = "requests"):
        """Waits until predicate(self) is true; returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; "
                                       f"got {len(self.requests)} request(s)")
                self._cond.wait(min(left, 0.2))

    def wait_requests(self, n: int, timeout: float = 20.0) -> List[Request]:
        self.wait(lambda p: len(p.requests) >= n and all(r.status for r in p.requests[:n]),
                  timeout, f"{n} answered request(s)")
        with self._cond:
            return list(self.requests)

    def delivered(self) -> List[Request]:
        with self._cond:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_events(self) -> List[dict]:
        out: List[dict] = []
        for r in self.delivered():
            out += decode_events(r)
        return out

    def wait_events(self, predicate, timeout: float = 20.0, what: str = "events") -> List[dict]:
        return self.wait(lambda p: (lambda evs: evs if predicate(evs) else None)(p.delivered_events()),
                         timeout, what)

    # -- process -----------------------------------------------------------

    def start(self) -> "HttpPeer":
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                with peer._cond:
                    peer._socks.add(self.request)
                if peer.tls:
                    try:
                        self.request.do_handshake()
                    except (ssl.SSLError, OSError):
                        with peer._cond:
                            peer.tls_failures += 1
                            peer._cond.notify_all()
                        raise
                super().setup()

            def handle(self):
                try:
                    super().handle()
                except (ConnectionError, ssl.SSLError, socket.timeout, ValueError):
                    pass

            def finish(self):
                try:
                    super().finish()
                except (ConnectionError, ssl.SSLError, ValueError):
                    pass
                with peer._cond:
                    peer._socks.discard(self.request)

            def log_message(self, *args):
                pass

            def _refuse_too_large(self, length):
                early = peer.refuse_early
                if not early:
                    while length > 0:
                        chunk = self.rfile.read(min(length, 65536))
                        if not chunk:
                            break
                        length -= len(chunk)
                req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                              list(self.headers.items()), b"", self.client_address[1], t=time.monotonic())
                with peer._cond:
                    peer.requests.append(req)
                    peer.connections.add(self.client_address[1])
                body = b"request body too large"
                self.send_response(413)
                if early:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                with peer._cond:
                    req.status = 413
                    peer._cond.notify_all()

            def do_POST(self):
                self._serve()

            def do_GET(self):
                self._serve()

            def do_PUT(self):
                self._serve()

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                if peer.max_body is not None and length > peer.max_body:
                    self._refuse_too_large(length)
                    return
                body = self.rfile.read(length) if length else b""
                cert = None
                if peer.tls:
                    cert = self.request.getpeercert() or None
                req = Request(self.command, self.path,
                              {k.lower(): v for k, v in self.headers.items()},
                              list(self.headers.items()), body, self.client_address[1],
                              client_cert=cert, t=time.monotonic())
                reply = peer._next_reply()
                with peer._cond:
                    peer.requests.append(req)
                    peer.connections.add(self.client_address[1])
                    peer._cond.notify_all()
                if reply.hang:
                    while not peer._release.wait(0.1) and not peer._stopping:
                        pass
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                body = reply.body
                if reply.echo:
                    body = (self.requestline + "\r\n" + str(self.headers)).encode("latin-1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                with peer._cond:
                    req.status = reply.status
                    peer._cond.notify_all()

        self._stopping = False
        self._release.clear()
        self._server = _Server(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        if self.tls:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True,
                                                       do_handshake_on_connect=False)
        self._server.server_bind()
        self._server.server_activate()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening and lets hanging requests end; idempotent."""
        if not self._server:
            return
        self._stopping = True
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would otherwise outlive the listener.
        with self._cond:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join()
        self._server = None

    def __enter__(self) -> "HttpPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def decode_events(req: Request) -> List[dict]:
    """The event objects of one request body, in order, whatever its shape."""
    ctype = req.headers.get("content-type", "")
    if ctype.startswith("application/x-ndjson"):
        return [json.loads(line) for line in req.body.decode().split("\n") if line]
    doc = json.loads(req.body)
    return doc if isinstance(doc, list) else [doc]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
