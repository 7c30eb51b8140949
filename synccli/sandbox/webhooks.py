"""Webhook deliveries from the simulators: subscriptions, a queue of signed deliveries on the
sandbox's clock, retries as each provider documents them, and a share of deliveries dropped.

What every provider shares lives here; what differs (which change raises which event, the body,
the signature, the registration routes) is in :mod:`synccli.sandbox.webhook_formats`.

How a change becomes a delivery: the neutral data model tells its watchers of every change to a
product or customer (:func:`synccli.sandbox.data.watch`), whoever made it (a handler, a test, a
benchmark's mutation). The outbox turns the change into one pending delivery per subscription
whose event it raises, due a small modelled delay later on the sandbox's clock (changes to one
record before its delivery goes out share that delivery, as a burst of field writes is one
change). Nothing is sent from a request handler:

- ``start()`` runs a background thread that sends what is due by the sandbox's clock (``sandbox
  serve``, tests over real loopback HTTP);
- ``pump(now)`` sends what is due by ``now`` in the caller's thread, for a simulated month whose
  clock only moves when the benchmark moves it: each delivery goes out at its own simulated time.

The sandbox only ever delivers to loopback (it is a local simulator: a URL elsewhere is refused at
registration). Deliveries are dropped (never sent, as "delivery is not guaranteed" allows [X-Series
D-WH; Xero]) with the fault spec's ``drop`` rules: ``drop:0.05`` drops 5% of every event,
``drop:0.2@:product`` a fifth of the events whose type matches ``product``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import io
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from synccli.sandbox import data

# (url, body, headers, deadline seconds) -> (status, answer body); raises on no answer
Transport = Callable[[str, bytes, dict[str, str], float], tuple[int, bytes]]
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def backoff(first: float, count: int, total: float) -> tuple[float, ...]:
    """``count`` retry delays doubling from ``first`` seconds, capped so that they add up to
    ``total`` seconds: "retried up to 20 times over 48h ... with exponential back-off" [X-Series
    D-WH] is ``backoff(30, 20, 48 * 3600)``."""
    low, high = first, total
    for _ in range(60):  # bisect the cap
        cap = (low + high) / 2
        spent = sum(min(cap, first * 2**i) for i in range(count))
        low, high = (cap, high) if spent < total else (low, cap)
    return tuple(round(min(high, first * 2**i), 3) for i in range(count))


@dataclass(frozen=True)
class Policy:
    """How a provider delivers: its retries, its deadline, what counts as an acceptable answer."""

    retry_delays: tuple[float, ...]  # seconds before each retry after a failed attempt
    answer_within: float = 5.0  # seconds for a 2xx answer, or the attempt failed
    delay: tuple[float, float] = (1.0, 10.0)  # seconds from a change to its first attempt
    empty_answer: bool = False  # an answer with a body is not acceptable (Xero)
    disable_after: float | None = None  # seconds failing before the subscription is disabled


@dataclass
class Subscription:
    id: str
    url: str
    events: frozenset[str]
    secret: str | None  # the signing key; None: deliveries go unsigned
    tenant: str
    active: bool = True
    status: str = "OK"  # "PENDING" until an intent-to-receive check passes (Xero), "DISABLED"
    failing_since: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    sub: Subscription
    event: str
    record: Any
    what: str  # the change: a field name, "added" or "deleted"
    made: datetime  # when the change happened
    due: datetime
    seq: int
    attempts: int = 0
    body: bytes | None = None  # rendered at the first attempt; retries send the same body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    at: datetime  # the sandbox's clock when it was sent
    sub: str
    event: str
    record_id: str
    made: datetime
    attempt: int
    status: int | None  # None: no answer (connection refused, deadline passed)
    ok: bool


class Format:
    """What one provider's deliveries look like (subclassed in webhook_formats)."""

    policy: Policy

    def events(self, record: Any, what: str) -> list[str]:
        """The event types a change raises (``what``: a field, "added" or "deleted")."""
        raise NotImplementedError

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        """The body and the headers that do not change between attempts."""
        raise NotImplementedError

    def sign(self, d: Delivery, now: datetime) -> dict[str, str]:
        """Headers signed afresh for each attempt (a timestamp, say)."""
        return {}


class Outbox:
    """One simulator's webhook subscriptions and the deliveries waiting to go out."""

    def __init__(self, app: Any, fmt: Format, transport: Transport | None = None) -> None:
        self.app = app
        self.format = fmt
        self.policy = fmt.policy
        self.deadline = fmt.policy.answer_within  # real seconds; a test may shorten it
        self.transport: Transport = transport or http_transport()
        self.subscriptions: dict[str, Subscription] = {}
        self.queue: list[tuple[datetime, int, Delivery]] = []
        self.pending: dict[tuple[str, str, str], Delivery] = {}  # not yet attempted, by record
        self.stats: Counter[str] = Counter()
        self.attempts: list[Attempt] = []
        self.rng = random.Random(7)
        self.lock = threading.RLock()
        self._seq = itertools.count(1)
        self._watching = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.checks: list[Subscription] = []  # intent-to-receive checks to run (Xero)
        # set by a format whose new subscriptions are checked before anything is sent (Xero)
        self.check: Callable[[Outbox, Subscription, datetime], None] | None = None

    # subscriptions ----------------------------------------------------------------------------
    def subscribe(
        self,
        url: str,
        events: Iterable[str],
        secret: str | None,
        tenant: str,
        *,
        sub_id: str | None = None,
        status: str = "OK",
        **extra: Any,
    ) -> Subscription:
        if not loopback(url):
            raise ValueError("the sandbox delivers to loopback only (http://127.0.0.1:PORT/...)")
        with self.lock:
            sub = Subscription(
                sub_id or f"wh-{next(self._seq)}",
                url,
                frozenset(events),
                secret,
                tenant,
                status=status,
                extra=dict(extra),
            )
            self.subscriptions[sub.id] = sub
            if status == "PENDING":
                self.checks.append(sub)
            if not self._watching:
                data.watch(self._heard)
                self._watching = True
            return sub

    def unsubscribe(self, sub_id: str) -> bool:
        with self.lock:
            sub = self.subscriptions.pop(sub_id, None)
            if sub is None:
                return False
            self._forget(sub)
            if not self.subscriptions and self._watching:
                data.unwatch(self._heard)
                self._watching = False
            return True

    def _forget(self, sub: Subscription) -> None:
        self.queue = [item for item in self.queue if item[2].sub is not sub]
        heapq.heapify(self.queue)
        for key in [k for k, d in self.pending.items() if d.sub is sub]:
            del self.pending[key]

    # changes ----------------------------------------------------------------------------------
    def _heard(self, container: Any, record: Any, what: str) -> None:
        rid = record.__dict__.get("id")
        if rid is None or not self.subscriptions:
            return
        tenant = self._tenant_of(container, record, rid, what)
        if tenant is None:
            return
        events = self.format.events(record, what)
        if not events:
            return
        now = self.app.clock.now()
        with self.lock:
            for sub in list(self.subscriptions.values()):
                if sub.tenant != tenant or not sub.active or sub.status != "OK":
                    continue
                for event in events:
                    if event in sub.events:
                        self._queue(sub, event, record, what, now)

    def _tenant_of(self, container: Any, record: Any, rid: str, what: str) -> str | None:
        tenants = {sub.tenant for sub in self.subscriptions.values()}
        for tenant in tenants:
            world = self.app.catalogue.tenants.get(tenant)
            if world is None:
                continue
            if isinstance(record, data.Product):
                mine = world.products if container is None else container
                if mine is world.products and (
                    what == "deleted" or world.products.get(rid) is record
                ):
                    return tenant
            elif isinstance(record, data.Customer):
                mine = world.customers if container is None else container
                if mine is world.customers and world.customers.get(rid) is record:
                    return tenant
        return None

    def _queue(self, sub: Subscription, event: str, record: Any, what: str, now: datetime) -> None:
        key = (sub.id, event, record.id)
        waiting = self.pending.get(key)
        if waiting is not None:  # one change in the making: its delivery is still to go
            if what in ("added", "deleted"):
                waiting.what = what
            return
        if self.app.faults.drops(event):
            self.stats["dropped"] += 1
            return
        lo, hi = self.policy.delay
        due = now + timedelta(seconds=self.rng.uniform(lo, hi))
        d = Delivery(sub, event, record, what, now, due, next(self._seq))
        self.pending[key] = d
        heapq.heappush(self.queue, (due, d.seq, d))
        self.stats["queued"] += 1

    # sending ----------------------------------------------------------------------------------
    def next_due(self) -> datetime | None:
        with self.lock:
            return self.queue[0][0] if self.queue else None

    def pump(self, now: datetime | None = None) -> int:
        """Send every delivery due by ``now`` (default: the sandbox's clock) in this thread,
        earliest first; a retry that falls due by ``now`` goes out too. Returns attempts made."""
        now = now or self.app.clock.now()
        made = 0
        while self.checks:
            sub = self.checks.pop(0)
            if self.check is not None:
                self.check(self, sub, now)
        while True:
            with self.lock:
                if not self.queue or self.queue[0][0] > now:
                    return made
                due, _, d = heapq.heappop(self.queue)
                self.pending.pop((d.sub.id, d.event, d.record.id), None)
            self._attempt(d, max(due, d.made))
            made += 1

    def _attempt(self, d: Delivery, at: datetime) -> None:
        sub = d.sub
        if not sub.active or sub.status != "OK":
            self.stats["not_sent"] += 1
            return
        if d.body is None:
            d.body, d.headers = self.format.render(d, at)
        headers = {**d.headers, **self.format.sign(d, at)}
        d.attempts += 1
        status, ok = self.post(sub.url, d.body, headers)
        self.attempts.append(
            Attempt(at, sub.id, d.event, d.record.id, d.made, d.attempts, status, ok)
        )
        if ok:
            self.stats["delivered"] += 1
            sub.failing_since = None
            return
        self.stats["failed_attempts"] += 1
        with self.lock:
            sub.failing_since = sub.failing_since or at
            limit = self.policy.disable_after
            if limit is not None and (at - sub.failing_since).total_seconds() >= limit:
                sub.status = "DISABLED"  # Xero: "After 24 hours the webhook will be disabled"
                self.stats["disabled"] += 1
                self._forget(sub)
                return
            if d.attempts > len(self.policy.retry_delays):
                self.stats["gave_up"] += 1
                return
            d.due = at + timedelta(seconds=self.policy.retry_delays[d.attempts - 1])
            heapq.heappush(self.queue, (d.due, d.seq, d))

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, bool]:
        """One POST: (status or None, whether the provider takes it as delivered)."""
        started = time.monotonic()
        try:
            status, answer = self.transport(url, body, headers, self.deadline)
        except Exception:  # refused, reset, timed out: no answer
            return None, False
        late = time.monotonic() - started > self.deadline
        ok = 200 <= status < 300 and not late and not (self.policy.empty_answer and answer)
        return status, ok

    # the background sender --------------------------------------------------------------------
    def start(self, interval: float = 0.02) -> Outbox:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
            self._thread.start()
        return self

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.pump()
            except Exception:  # a sender bug must not stop the simulator
                self.stats["sender_errors"] += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        with self.lock:
            if self._watching:
                data.unwatch(self._heard)
                self._watching = False


def loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK


# --- transports -----------------------------------------------------------------------------------
def http_transport() -> Transport:
    """POST over real HTTP (the receiver on loopback), one connection kept alive."""
    import requests

    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy from the environment

    def send(url: str, body: bytes, headers: dict[str, str], deadline: float) -> tuple[int, bytes]:
        resp = session.post(url, data=body, headers=headers, timeout=deadline)
        return resp.status_code, resp.content

    return send


def wsgi_transport(application: Callable[..., Iterable[bytes]]) -> Transport:
    """Call a WSGI application in this process with the request a provider would send: the
    receiver's own code runs on the same bytes and headers, without a socket (a simulated month
    delivers tens of thousands)."""

    def send(url: str, body: bytes, headers: dict[str, str], deadline: float) -> tuple[int, bytes]:
        parts = urlsplit(url)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": parts.path or "/",
            "QUERY_STRING": parts.query,
            "SERVER_NAME": parts.hostname or "127.0.0.1",
            "SERVER_PORT": str(parts.port or 80),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": parts.scheme or "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ[f"HTTP_{key}"] = value
        status: list[str] = []

        def start_response(line: str, _headers: Any, _exc: Any = None) -> Any:
            status.append(line)
            return lambda _chunk: None

        chunks = application(environ, start_response)
        try:
            answer = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return int(status[0].split(" ", 1)[0]), answer

    return send


# What each simulator's webhooks raise an event for: a change to one of these fields.
PRODUCT_FIELDS = frozenset({"code", "name", "description", "price", "archived", "tracked"})
CUSTOMER_FIELDS = frozenset(
    {"name", "first_name", "last_name", "email", "account_number", "code", "archived"}
)


def hmac_sha256(key: str | bytes, message: bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(raw, message, hashlib.sha256).digest()
