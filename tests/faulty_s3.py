"""A fault-injecting HTTP proxy in front of a loopback S3 API server (moto), for tests.

Clients (s3fs/botocore, exactly as in production) point their endpoint at `proxy.url`; the
proxy forwards each request unchanged (method, path, query, headers incl. Host and the
signature, body) to the upstream and relays the answer, except where its plan injects a fault:

    "503"          503 SlowDown (S3's throttling answer), request not forwarded
    "500"          500 InternalError, request not forwarded
    "reset"        request read, then the socket is reset (RST) without a response
    "reset_after"  request forwarded and executed upstream, then the socket is reset: the
                   client cannot know whether its request took effect
    "truncate"     request forwarded; the response is cut off halfway through its body
    "403"          403 AccessDenied (a permanent error), request not forwarded

A plan decides per request: a callable taking a `Request` (arrival index, method, bucket,
key, query) and returning a kind or None, or a sequence of kinds indexed by arrival order.
`every()` and `deny()` build the common ones. Counts of injected faults are in `faults`.

Bounded: the upstream must be on the loopback interface, sockets have timeouts, and the
server stops (closing every client connection) when the context manager exits.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

KINDS = ("503", "500", "reset", "reset_after", "truncate", "403")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SOCKET_TIMEOUT = 30.0  # seconds; bounds every read and write on both sides

# Hop-by-hop headers are the proxy's own business; everything else passes through.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
}

ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
}


@dataclass(frozen=True)
class Request:
    """What a plan sees of one request."""

    index: int  # 0-based arrival order across all connections
    method: str
    bucket: str
    key: str  # URL-decoded object key ("" for bucket-level requests)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        """`bucket/key`, or `bucket/prefix` for a listing (`bucket/` when unprefixed)."""
        if not self.key and "prefix" in self.query:
            return f"{self.bucket}/{self.query['prefix']}"
        return f"{self.bucket}/{self.key}"


Plan = Callable[[Request], "str | None"]


def every(n: int, kinds: Sequence[str] = ("503", "500", "reset"), first: int | None = None) -> Plan:
    """Fail every n-th request (arrival index n-1, 2n-1, ...), cycling through `kinds`."""
    if n < 1 or not kinds:
        raise ValueError("every() needs n >= 1 and at least one kind")
    _check_kinds(kinds)
    offset = n - 1 if first is None else first

    def plan(request: Request) -> str | None:
        i = request.index - offset
        if i < 0 or i % n:
            return None
        return kinds[(i // n) % len(kinds)]

    return plan


def burst(match: str, n: int | None, kind: str = "503", method: str | None = None) -> Plan:
    """Fail the first `n` requests (all of them when n is None) whose `bucket/key` contains
    `match` (and whose method is `method`, when given), consecutively: more faults in a row
    than one retry layer absorbs."""
    _check_kinds([kind])
    seen = [0]

    def plan(request: Request) -> str | None:
        if match not in request.resource or (method is not None and request.method != method):
            return None
        seen[0] += 1
        return kind if n is None or seen[0] <= n else None

    return plan


def deny(prefix: str) -> Plan:
    """A permanent 403 AccessDenied for every request on `bucket/key...` under `prefix`."""

    def plan(request: Request) -> str | None:
        return "403" if request.resource.startswith(prefix) else None

    return plan


def _check_kinds(kinds: Sequence[str | None]) -> None:
    unknown = sorted({k for k in kinds if k is not None and k not in KINDS})
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")


def error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{_xml_escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode("utf-8")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultyS3Proxy

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        conn.settimeout(SOCKET_TIMEOUT)
        self.proxy._track(conn)
        return conn, addr

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self.proxy._untrack(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp expects from S3
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _relay(self) -> None:
        self.server.proxy._handle(self)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


class FaultyS3Proxy:
    """`with FaultyS3Proxy(upstream, plan) as proxy:` serves on `proxy.url` until exit."""

    def __init__(self, upstream: str, plan: Plan | Sequence[str | None] | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK or parts.port is None:
            raise ValueError(f"upstream must be http://<loopback>:<port>, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        if plan is not None and not callable(plan):
            _check_kinds(list(plan))
        self.plan = plan
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.log: list[tuple[int, str, str, str | None]] = []  # index, method, resource, fault
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyS3Proxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name="faulty-s3-proxy",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # idle keep-alive connections: their threads end at once
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    # ------------------------------------------------------------ one request
    def _decide(self, method: str, target: str) -> tuple[Request, str | None]:
        parts = urlsplit(target)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            request = Request(self.requests, method, bucket, key, query)
            self.requests += 1
            if self.plan is None:
                kind = None
            elif callable(self.plan):
                kind = self.plan(request)
            else:
                kind = self.plan[request.index] if request.index < len(self.plan) else None
            if kind is not None:
                if kind not in KINDS:
                    raise ValueError(f"plan returned unknown fault kind {kind!r}")
                self.faults[kind] += 1
            self.log.append((request.index, method, request.resource, kind))
        return request, kind

    def _handle(self, h: _Handler) -> None:
        body = _read_body(h)
        request, kind = self._decide(h.command, h.path)
        if kind in ERRORS:
            status, code, message = ERRORS[kind]
            payload = error_body(code, message, f"/{request.resource}", f"faulty-{request.index}")
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(payload)))
            h.send_header("x-amz-request-id", f"faulty-{request.index}")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        if kind == "reset":
            _reset(h)
            return
        status, reason, headers, payload = self._forward(h, body)
        if kind == "reset_after":
            _reset(h)
            return
        h.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                h.send_header(name, value)
        if h.command == "HEAD":
            length = next((v for n, v in headers if n.lower() == "content-length"), "0")
        else:
            length = str(len(payload))
        h.send_header("Content-Length", length)
        h.end_headers()
        if h.command == "HEAD":
            return
        if kind == "truncate" and payload:
            h.wfile.write(payload[: len(payload) // 2])
            h.wfile.flush()
            _reset(h)
            return
        h.wfile.write(payload)

    def _forward(self, h: _Handler, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.upstream
        conn = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT)
        try:
            # Host (and so the SigV4 signature over it) stays the client's, i.e. the proxy's.
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or h.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, resp.reason, resp.getheaders(), payload
        finally:
            conn.close()


def _read_body(h: _Handler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _reset(h: _Handler) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a dying load balancer does."""
    h.close_connection = True
    try:
        h.wfile.flush()
    except OSError:
        pass
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
