"""The webhook receiver: a WSGI application that verifies a delivery, stores it once and answers.

``POST /webhooks/<connection>`` (Xero) or ``POST /webhooks/<connection>/<token>`` (X-Series and
Unleashed, whose deliveries carry no signature of their own we can rely on: the token is ours, see
verify.py). Nothing else is done inline — no API call, no applying: the jobs read what is stored
(store/webhooks.py) — so the answer comes within the providers' deadlines (Xero and X-Series: 5 s).

The answer, in order of the checks:

- 404 unknown path; 405 not a POST; 411 no length; 413 a body over the size cap (refused before
  it is read). None of these depends on the connection's name;
- 401 a bad or missing signature or token: nothing stored, counted as a rejected signature
  (``webhooks status``, written off the request path: refusals.py). Xero's intent-to-receive
  check sends one good and one bad: 200 and 401. A name no connection has is answered the same
  401, after the same work (the body read, one HMAC over it against a key no one has): neither
  the answer nor its time tells anyone which names exist. Only the log line tells the operator;
- 415 not the provider's content type; 400 a body that is not the provider's;
- 200, empty, only once the events are committed. A store that fails answers 503: the provider
  sends the delivery again, and its retry is stored once (the unique dedup key). A receiver that
  answered 200 on a database failure would lose the change for good.

Each request logs exactly one line (the connection's name, never the URL: it holds the token).

``application`` is the object to give any WSGI server (``synccli.webhooks.app:application``): it
opens the store named by the environment (``SYNC_DATABASE_URL``...) on its first request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from sqlalchemy.exc import SQLAlchemyError

from synccli import registry, secrets
from synccli.clock import Clock, SystemClock
from synccli.errors import SyncError
from synccli.store import webhooks as stored
from synccli.store.db import Store
from synccli.webhooks import parse, verify
from synccli.webhooks.events import WebhookEvent
from synccli.webhooks.refusals import Refusals

log = logging.getLogger("synccli.webhooks")

MAX_BODY = 1024 * 1024  # a Xero batch or one 1.0-shaped X-Series record is far smaller
PROVIDERS = registry.webhook_names()
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Target:
    """A connection that may receive deliveries, with its webhook secrets (opened once)."""

    id: int
    name: str
    provider: str
    tenant_id: str | None
    webhook_key: str | None
    signing_key: str | None
    app_secret: str | None = None  # an OAuth app's client secret (some providers sign with it)
    settings: Mapping[str, Any] = field(default_factory=dict)  # the connection's (grant...)


# What a request for a name no connection has is checked as (see Receiver._verified): by the
# URL's shape, a connection of the first provider whose webhook URL carries a token (or none),
# keyed with a key made afresh in this process and never shown. Taken from the registry, so no
# provider is named here.
def _stand_in(with_token: bool) -> Target:
    provider = next(
        p
        for p in registry.providers()
        if p.webhooks is not None and p.webhooks.url_token == with_token
    )
    return Target(0, "", provider.name, None, verify.NO_ONES_KEY, None)


STAND_INS = {False: _stand_in(False), True: _stand_in(True)}


class Removed(Exception):
    """A connection the delivery was verified for is no longer in the store."""


@dataclass
class Answer:
    status: int
    why: str
    body: bytes = b""
    log_level: int = logging.WARNING


class Directory:
    """The connections by name, read again every ``ttl`` seconds (a webhook key set with
    `connections set` counts within that), and at once, at most each second, when a request
    did not verify (a connection added or a key set a moment ago): a burst of deliveries costs
    no credential decryption per request."""

    def __init__(self, store: Store, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._targets: dict[str, Target] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            age = now - self._read_at
            if age < self.ttl and not (force and age >= 1.0):
                return
            with self.store.read_session() as s:
                rows = stored.webhook_connections(s, PROVIDERS)
            targets = {}
            for conn in rows:
                creds = self.store.vault.open(conn.credentials) if conn.credentials else {}
                key, signing = creds.get("webhook_key"), creds.get("webhook_signing_key")
                secrets.register(key, signing)
                settings = conn.settings or {}
                tenant = settings.get("tenant_id")
                targets[conn.name] = Target(
                    conn.id,
                    conn.name,
                    conn.provider,
                    tenant and str(tenant),
                    key,
                    signing,
                    creds.get("client_secret"),
                    dict(settings),
                )
            self._targets, self._read_at = targets, now

    def get(self, name: str) -> Target | None:
        self._refresh(force=False)
        return self._targets.get(name)

    def again(self, name: str) -> Target | None:
        """``name``'s connection read afresh (at most once a second, whichever name asks)."""
        self._refresh(force=True)
        return self._targets.get(name)

    def names(self, ids: set[int]) -> dict[int, str]:
        """The names this directory knows the connections ``ids`` by."""
        return {t.id: t.name for t in self._targets.values() if t.id in ids}

    def forget(self) -> None:
        """Read the connections again at the next request (one was found removed)."""
        with self._lock:
            self._read_at = float("-inf")

    def tenant(self, provider: str, tenant: str, key: str) -> Target | None:
        """The connection to ``provider`` of ``tenant`` whose webhook key is ``key`` (the one
        the delivery was signed with: a tenant of another app's is not this delivery's to
        feed): one app's webhook serves every organisation connected to it."""
        return next(
            (
                t
                for t in self._targets.values()
                if t.provider == provider and t.tenant_id == tenant and t.webhook_key == key
            ),
            None,
        )


class Receiver:
    """The WSGI application (one per process; requests run on the server's threads)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        max_body: int = MAX_BODY,
        directory_ttl: float = 5.0,
        on_stored: Callable[[set[int]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.max_body = max_body
        self.directory = Directory(store, directory_ttl)
        self.refusals = Refusals(store, self.clock)  # counted off the request path
        # told, after the commit, which connections got new deliveries (webhooks/applier.py:
        # `webhooks serve` applies them a moment later on a thread of its own)
        self.on_stored = on_stored

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        began = time.monotonic()
        name = "-"
        try:
            name, answer = self.handle(environ)
        except Exception as exc:  # a bug: 500, so the provider sends it again later
            answer = Answer(500, f"unexpected {type(exc).__name__}", log_level=logging.ERROR)
        took = (time.monotonic() - began) * 1000
        log.log(
            answer.log_level, "webhook %s: %d, %s (%.0f ms)", name, answer.status, answer.why, took
        )
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(answer.body)))]
        if answer.status == 503:
            headers.append(("Retry-After", "30"))
        start_response(f"{answer.status} {REASONS[answer.status]}", headers)
        return [answer.body]

    def handle(self, environ: dict[str, Any]) -> tuple[str, Answer]:
        parts = [unquote(p) for p in str(environ.get("PATH_INFO") or "").split("/") if p]
        if parts == ["healthz"]:
            return "-", Answer(200, "health check", b"ok\n", logging.DEBUG)
        if len(parts) not in (2, 3) or parts[0] != "webhooks":
            return "-", Answer(404, "no such path")
        name = parts[1]
        if environ.get("REQUEST_METHOD") != "POST":
            return name, Answer(405, "not a POST")
        token = parts[2] if len(parts) == 3 else None
        body = self._body(environ)  # before the name is looked up: the same for every name
        if isinstance(body, Answer):
            return name, body
        now = self.clock.now()
        target = self.directory.get(name)
        if not self._verified(target, environ, body, token, now):
            # a connection added or a key set a moment ago: read them again (at most once a
            # second, for a known name as for an unknown one) and check once more
            fresh = self.directory.again(name)
            if fresh is None or fresh == target:
                return name, self._refused(fresh)
            if not self._verified(fresh, environ, body, token, now):
                return name, self._refused(fresh)
            target = fresh
        if target is None:  # never: see _verified
            return name, self._refused(None)
        return name, self._deliver(target, environ, body, now)

    def _verified(
        self,
        target: Target | None,
        environ: dict[str, Any],
        body: bytes,
        token: str | None,
        now: Any,
    ) -> bool:
        """Whether the request is ``target``'s. A name no connection has is checked all the
        same, as a stand-in connection of the URL's shape whose key no one has, through the
        same code (the time of a refusal tells no name), and refused whatever that says."""
        if target is None:
            self._authentic(STAND_INS[token is not None], environ, body, token, now)
            return False
        return self._authentic(target, environ, body, token, now)

    def _refused(self, target: Target | None) -> Answer:
        """401, empty, whether or not a connection has the name (the log line says which)."""
        if target is None:
            # The same answer as a bad signature's: a 404 told anyone which names exist. Any
            # non-2xx is a failed delivery to every provider alike (retried; Xero turns off a
            # webhook failing for a day): one sent to a removed connection's name still fails.
            return Answer(
                401, "no connection of that name receives webhooks: answered as a bad signature"
            )
        self.refusals.add(target.id)
        return Answer(401, "bad or missing signature: nothing stored")

    def _body(self, environ: dict[str, Any]) -> bytes | Answer:
        length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
        if not length_text.isdigit():
            return Answer(411, "no Content-Length")
        length = int(length_text)
        if length > self.max_body:
            return Answer(413, f"body of {length} bytes over the {self.max_body}-byte cap")
        body = environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            return Answer(400, "body shorter than its Content-Length")
        return bytes(body)

    def _deliver(self, target: Target, environ: dict[str, Any], body: bytes, now: Any) -> Answer:
        ctype = str(environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
        if ctype != registry.get(target.provider).webhooks_support.content_type:
            return Answer(415, f"content type {ctype or '(none)'} is not {target.provider}'s")
        try:
            routed, ignored = self._events(target, environ, body, now)
        except parse.Malformed as exc:
            return Answer(400, f"malformed: {exc}")
        try:
            added = self._store(target, routed, now)
        except Removed:
            self.directory.forget()
            return Answer(404, "the connection was removed: nothing stored")
        except (SQLAlchemyError, SyncError) as exc:
            # 5xx: the provider retries, and the retry is stored once
            why = f"not stored ({type(exc).__name__}): the provider will send it again"
            return Answer(503, why, log_level=logging.ERROR)
        self.refusals.flush()  # refused requests counted meanwhile: written after this commit
        if added and self.on_stored is not None:  # only queued here: applied off the request path
            self.on_stored({e.connection_id for e in routed})
        note = f", {ignored} not followed" if ignored else ""
        why = f"{added} new of {len(routed)} event(s){note}"
        return Answer(200, why, log_level=logging.INFO)

    def _authentic(
        self,
        target: Target,
        environ: dict[str, Any],
        body: bytes,
        token: str | None,
        now: Any,
    ) -> bool:
        """Our URL token where the provider's URL carries one, then the provider's own
        signature (its connector's ``webhook_signed``). Every refusal costs what a Xero
        signature check does (an HMAC over the body), whatever the provider."""
        provider = registry.get(target.provider)
        if provider.webhooks_support.url_token and not verify.token_ok(target.webhook_key, token):
            return verify.no_ones_signature(body, token)

        def header(name: str) -> str | None:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            return None if value is None else str(value)

        return bool(provider.module().webhook_signed(target, header, body, now))

    def _events(
        self, target: Target, environ: dict[str, Any], body: bytes, now: Any
    ) -> tuple[list[WebhookEvent], int]:
        """The followed events, each given the connection it belongs to; and how many were
        left out (a kind not followed, a tenant no connection of this key has)."""
        query = {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING") or "")).items()}
        module = registry.get(target.provider).module()
        found, skipped = module.webhook_events(body, query, now)
        routed = []
        for tenant, event in found:
            owner: Target | None = target
            if tenant is not None:
                owner = self.directory.tenant(target.provider, tenant, target.webhook_key or "")
            if owner is not None:
                routed.append(dataclasses.replace(event, connection_id=owner.id))
        return routed, skipped + len(found) - len(routed)

    def _store(self, target: Target, events: list[WebhookEvent], now: Any) -> int:
        ids = {target.id, *(e.connection_id for e in events)}
        with self.store.session() as s:
            # The directory is a few seconds old: a connection removed meanwhile may have had
            # its id taken by a new one (SQLite reuses the highest), whose store this delivery
            # must never feed. Checked in the transaction that stores it.
            if stored.connection_names(s, ids) != self.directory.names(ids):
                raise Removed
            added = stored.record_events(s, events, now)
            for connection_id in ids:
                stored.record_delivery(s, connection_id, now)
        return added


_built: Receiver | None = None
_build_lock = threading.Lock()


def build(store: Store | None = None, **kw: Any) -> Receiver:
    """A receiver on ``store``, or on the store the environment names (as every command finds
    it), whose schema must be current."""
    if store is None:
        from synccli.config import load_settings
        from synccli.store.db import open_store

        store = open_store(load_settings(), check=True, create=False)
    if not logging.getLogger("synccli").handlers:  # under another WSGI server: lines to stderr
        from synccli.logs import setup_logging

        setup_logging(1)
    return Receiver(store, **kw)


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point for any server (gunicorn ``synccli.webhooks.app:application``)."""
    global _built
    if _built is None:
        with _build_lock:
            if _built is None:
                _built = build()
    return _built(environ, start_response)
