"""What every simulator shares: a threaded WSGI server on loopback, request parsing, counters,
fault injection and limit windows.

A simulator subclasses :class:`SandboxApp`, registers its routes with :meth:`SandboxApp.route`,
and renders the neutral records of :mod:`synccli.sandbox.data` in its provider's wire format.
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from socketserver import ThreadingMixIn
from typing import IO, Any, TypeVar, cast
from urllib.parse import parse_qsl
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from synccli.clock import Clock, SystemClock
from synccli.sandbox.data import Catalogue, catalogue_version

# "drop": a webhook delivery never sent (synccli.sandbox.webhooks); its rule's path is matched
# against the event type, and it never touches a request
FAULT_KINDS = ("500", "503", "slow", "reset", "lost", "html", "truncated", "drop")


@dataclass
class Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    environ: dict[str, Any]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes/str for raw bodies
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@dataclass
class FaultRule:
    kind: str  # one of FAULT_KINDS
    rate: float = 1.0  # probability per matching request
    method: str | None = None  # e.g. "PUT"
    path: str | None = None  # regex searched in the path
    remaining: int | None = None  # fire at most this many times (None = forever)

    def matches(self, req: Request) -> bool:
        if self.method and req.method != self.method.upper():
            return False
        return not (self.path and not re.search(self.path, req.path))


class Faults:
    """Faults on demand. ``spec`` looks like ``"500:0.1,lost:0.1@PUT:/Invoices,slow:0.05"``."""

    def __init__(self, seed: int = 7, slow_seconds: float = 3.0) -> None:
        self.rules: list[FaultRule] = []
        self.rng = random.Random(seed)
        self.drop_rng = random.Random(seed + 1)  # drops never move the request faults' draws
        self.slow_seconds = slow_seconds
        self.fired: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(
        self,
        kind: str,
        rate: float = 1.0,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = None,
    ) -> FaultRule:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        rule = FaultRule(kind, rate, method, path, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def parse(self, spec: str) -> None:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            head, _, where = part.partition("@")
            kind, _, rate = head.partition(":")
            method, _, path = where.partition(":") if where else ("", "", "")
            self.add(kind, float(rate or 1.0), method=method or None, path=path or None)

    def pick(self, req: Request) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule.kind == "drop" or rule.remaining == 0 or not rule.matches(req):
                    continue
                if self.rng.random() < rule.rate:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.fired[rule.kind] += 1
                    return rule.kind
        return None

    def drops(self, event: str) -> bool:
        """Whether a webhook delivery of ``event`` is dropped (never sent)."""
        with self.lock:
            for rule in self.rules:
                if rule.kind != "drop" or rule.remaining == 0:
                    continue
                if rule.path and not re.search(rule.path, event):
                    continue
                if self.drop_rng.random() < rule.rate:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.fired["drop"] += 1
                    return True
        return False


class Counters:
    """What the sandbox saw: calls by endpoint, writes per record, 429s served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()  # (method, endpoint)
        self.writes: Counter[tuple[str, str]] = Counter()  # (kind, record id) -> writes
        self.creates: Counter[str] = Counter()  # kind -> records created
        self.updates: Counter[str] = Counter()  # kind -> existing records updated
        self.throttled = 0  # 429s served
        self.requests: list[dict[str, Any]] = []  # bodies received by writes (for wire checks)

    def total(self, method: str | None = None, endpoint: str | None = None) -> int:
        with self.lock:
            return sum(
                n
                for (m, e), n in self.calls.items()
                if (method is None or m == method) and (endpoint is None or e == endpoint)
            )

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.writes.clear()
            self.creates.clear()
            self.updates.clear()
            self.throttled = 0
            self.requests.clear()


class Window:
    """A fixed window counter: ``limit`` calls per ``seconds`` of the limit clock."""

    def __init__(self, limit: int | None, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.start = 0.0
        self.used = 0

    def _roll(self, t: float) -> None:
        if t - self.start >= self.seconds:
            self.start = t - ((t - self.start) % self.seconds) if self.start else t
            self.used = 0

    def remaining(self, t: float) -> int:
        self._roll(t)
        return max(0, (self.limit or 0) - self.used)

    def take(self, t: float) -> bool:
        self._roll(t)
        if self.limit is None:
            return True
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def retry_after(self, t: float) -> float:
        return max(0.0, self.start + self.seconds - t)


class LeakyBucket:
    """Lightspeed's bucket: the request that overflows it is allowed, later ones are not."""

    def __init__(self, size: float, drip: float) -> None:
        self.size = size
        self.drip = drip
        self.level = 0.0
        self.at = 0.0

    def _drain(self, t: float) -> None:
        self.level = max(0.0, self.level - (t - self.at) * self.drip)
        self.at = t

    def take(self, t: float, cost: float) -> bool:
        self._drain(t)
        if self.level > self.size:
            return False
        self.level += cost
        return True

    def retry_after(self, t: float) -> float:
        self._drain(t)
        return max(0.0, (self.level - self.size) / self.drip)


Handler = Callable[..., Response]
T = TypeVar("T")
VIEWS_KEPT = 32  # cached catalogue views per sandbox (a listing's pages share one)


class SandboxApp:
    """Base WSGI app: routing, counters, faults, shared clock and time scale."""

    provider = "base"

    def __init__(
        self,
        *,
        seed: int = 42,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        faults: str | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.time_scale = time_scale
        self.catalogue = Catalogue(seed, self.clock)
        self.counters = Counters()
        self.faults = Faults(seed)
        if faults:
            self.faults.parse(faults)
        self.lock = threading.RLock()  # one request at a time touches the data
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        # Callbacks run as a request is served (after auth and limits, before the handler, with
        # the data lock held): a test changes the provider's data between two pages of a listing
        # the way a merchant does while a job pages through it (issue 17).
        self.on_request: list[Callable[[Request, str], None]] = []
        self._views: dict[tuple[Any, ...], tuple[int, Any]] = {}
        self._views_lock = threading.Lock()
        # the simulator's webhook sender (synccli.sandbox.webhooks.Outbox), where it has one
        self.webhooks: Any = None

    # subclasses -------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, endpoint: str, handler: Handler) -> None:
        """Register ``handler(req, **groups)`` for ``method`` and a path regex (anchored)."""
        self.routes.append((method, re.compile(f"^{pattern}$", re.IGNORECASE), endpoint, handler))

    def before(self, req: Request, endpoint: str) -> Response | None:
        """Auth and limits; return a Response to answer early. Runs before the handler."""
        return None

    def after(self, req: Request, endpoint: str, resp: Response) -> None:
        """Add limit headers and so on."""

    def cached_view(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """``build()``, reused for the same ``key`` while no product has changed.

        A listing filters and sorts the whole catalogue, and a client reads it page by page: done
        for every page, a 50,000-product read was quadratic. The view is kept under the catalogue's
        change counter (:func:`synccli.sandbox.data.catalogue_version`), so any change to any
        product rebuilds it and answers stay exactly what an uncached build would give. The
        caller must not modify the returned value."""
        version = catalogue_version()
        with self._views_lock:
            hit = self._views.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = build()
        with self._views_lock:
            self._views.pop(key, None)
            self._views[key] = (version, value)
            while len(self._views) > VIEWS_KEPT:
                self._views.pop(next(iter(self._views)))
        return value

    def limit_time(self) -> float:
        """Seconds on the limit clock: real time sped up by the time scale, so a test can cross a
        minute window in a second."""
        return time.monotonic() * self.time_scale

    # WSGI -------------------------------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        req = _request(environ)
        resp = self.handle(req)
        if resp is None:  # connection dropped on purpose
            _drop(environ)
            raise _Dropped()
        body = resp.encode()
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(body)))]
        headers += [(k, str(v)) for k, v in resp.headers.items()]
        if "Date" not in resp.headers:
            from email.utils import format_datetime

            headers.append(("Date", format_datetime(self.clock.now(), usegmt=True)))
        start_response(f"{resp.status} {_REASONS.get(resp.status, 'Status')}", headers)
        return [body]

    def handle(self, req: Request) -> Response | None:
        for method, pattern, endpoint, handler in self.routes:
            if method != req.method:
                continue
            match = pattern.match(req.path)
            if not match:
                continue
            with self.counters.lock:
                self.counters.calls[(req.method, endpoint)] += 1
            fault = self.faults.pick(req)
            if fault == "reset":
                return None
            if fault == "slow":
                time.sleep(self.faults.slow_seconds)
            early = self.before(req, endpoint)
            if early is not None:
                if early.status == 429:
                    with self.counters.lock:
                        self.counters.throttled += 1
                return early
            if fault in ("500", "503"):
                return self.fault_response(int(fault))
            if fault == "html":
                return Response(
                    502,
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                    content_type="text/html",
                )
            with self.lock:
                for hook in list(self.on_request):
                    hook(req, endpoint)
                try:
                    resp = handler(req, **match.groupdict())
                except _BadJson:
                    resp = Response(400, {"message": "request body is not valid JSON"})
                except Exception:  # a simulator bug must show, as a provider's 500 would
                    traceback.print_exc()
                    resp = Response(500, {"message": "sandbox error (see its stderr)"})
            if fault == "lost":
                return None  # the write above is committed; the answer never arrives
            if fault == "truncated":
                resp = Response(
                    resp.status,
                    resp.encode()[: max(1, len(resp.encode()) // 2)],
                    resp.headers,
                    resp.content_type,
                )
            self.after(req, endpoint, resp)
            return resp
        return Response(404, {"message": f"no route for {req.method} {req.path}"})

    def fault_response(self, status: int) -> Response:
        if status == 503:
            return Response(
                503, "The API is currently offline for maintenance", content_type="text/plain"
            )
        return Response(500, {"message": "An unhandled error occurred"})

    def record_write(self, kind: str, record_id: str, body: Any, created: bool) -> None:
        with self.counters.lock:
            self.counters.writes[(kind, record_id)] += 1
            (self.counters.creates if created else self.counters.updates)[kind] += 1
            self.counters.requests.append({"kind": kind, "id": record_id, "body": body})


class _BadJson(Exception):
    pass


class _Dropped(Exception):
    """The simulator dropped the connection on purpose (reset / lost-response faults)."""


def json_body(req: Request) -> Any:
    """The request's JSON body; a malformed body answers 400 like a provider would."""
    try:
        return req.json()
    except (ValueError, UnicodeDecodeError):
        raise _BadJson() from None


def _request(environ: dict[str, Any]) -> Request:
    headers = {
        k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    return Request(
        method=environ["REQUEST_METHOD"].upper(),
        path=environ.get("PATH_INFO", "/"),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        body=body,
        environ=environ,
    )


def _drop(environ: dict[str, Any]) -> None:
    sock = environ.get("sandbox.socket")
    if sock is not None:
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: WSGIServer  # make_server builds it (a _Server)

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["sandbox.socket"] = self.connection
        return env

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
        pass

    def handle(self) -> None:
        # Keep-alive: serve requests on this connection until the client closes it.
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            # the socket's buffered files, which the stubs type more loosely than IO[bytes]
            handler = _KeepAliveHandler(
                cast(IO[bytes], self.rfile),
                cast(IO[bytes], self.wfile),
                self.get_stderr(),
                self.get_environ(),
                multithread=True,
            )
            handler.request_handler = self
            app = self.server.get_app()
            assert app is not None  # make_server set it
            handler.run(app)
            if self.headers.get("Connection", "").lower() == "close":
                self.close_connection = True
            else:
                self.close_connection = False
        except (ConnectionError, OSError):
            self.close_connection = True


class _KeepAliveHandler(SimpleHandler):
    http_version = "1.1"
    origin_server = True
    request_handler: _Handler  # set right after construction
    # BaseHandler's own state, which the stubs do not declare: start_response sets the status
    # before the answer is finished and the handler closed.
    status: str
    bytes_sent: int

    def handle_error(self) -> None:
        # A dropped connection (fault) or a client that went away: nothing to answer.
        self.request_handler.close_connection = True

    def close(self) -> None:
        try:
            self.request_handler.log_request(self.status.split(" ", 1)[0], self.bytes_sent)
        finally:
            super().close()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class SandboxServer:
    """Serve a SandboxApp on loopback in a background thread.

    >>> with SandboxServer(XeroSandbox(products=10)) as server:
    ...     requests.get(server.url + "/api.xro/2.0/Items")
    """

    def __init__(self, app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.httpd = make_server(host, port, app, server_class=_Server, handler_class=_Handler)
        bound, self.port = self.httpd.server_address[:2]
        self.host = cast(str, bound)  # an IPv4 address: always text
        self.url = f"http://{self.host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> SandboxServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.app.webhooks is not None:
            self.app.webhooks.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ceil_seconds(value: float) -> str:
    """A Retry-After value: whole seconds when real, fractional when the clock is scaled."""
    return str(max(1, math.ceil(value))) if value >= 1 else f"{max(value, 0.01):.2f}"
