"""The conformance corpus's loader, loopback server and comparisons.

A fixture (one JSON file under ``<provider>/``) re-expresses one published example or publicly
recorded answer of a provider (its ``source`` is a key of ``SOURCES.md`` beside it). It says:

- ``call``: the connector method to call and its arguments (``method``, ``args``);
- ``exchanges``: the HTTP calls the connector must make, in order, each with a ``request``
  expectation (method, path, query values, form fields, headers, JSON body fields, compared
  exactly; ``query_like`` holds patterns, ``query_one_of`` alternatives, ``query_absent`` keys
  never sent, ``raw_query_contains`` bytes of the query as sent; an Unleashed request's
  api-auth-signature is checked against its query as sent unless ``signed`` is false; a
  path segment ``{name}`` matches any one segment and its value can be used in the answer as
  ``{{name}}``) and the ``response`` the provider gave (status, headers, a JSON ``body`` or a
  raw ``text``; ``{{base}}`` is the server's own address, for Lightspeed's ``next`` links);
- ``expect``: the parsed ``result`` (records compared on the fields the fixture names; money
  as Decimal, times as instants) or the ``error`` (its class and messages);
- ``xfail`` (optional): why the connector does not read it yet, naming the issue line.

Each fixture is served on 127.0.0.1 by :class:`FixtureServer` to the real connector built by
:func:`connector_for`; a request the fixture does not expect is answered 599 and fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from synccli import registry
from synccli.clock import SimClock
from synccli.connectors import lightspeed, lightspeed_x, unleashed, xero
from synccli.connectors.auth import MemoryTokenStore, Tokens
from synccli.connectors.base import (
    Connector,
    InvoiceDraft,
    InvoiceLine,
    NewCustomer,
    NewProduct,
    Page,
    PaymentToApply,
)
from synccli.connectors.http import MemoryLedger

HERE = Path(__file__).parent
PROVIDERS = registry.names()
# a fixed instant for every connector clock (the fixtures' answers carry their own Date headers)
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# made-up credentials: the fixtures hold no real account's values
XERO_TENANT = "conformance-tenant-0001"
UNLEASHED_ID = "conformance-api-id"
UNLEASHED_KEY = "conformance-api-key"
LIGHTSPEED_ACCOUNT = "12345"
ACCESS, REFRESH = "conformance-access-token", "conformance-refresh-token"


# ------------------------------------------------------------------------------------------
# loading


@dataclasses.dataclass
class Fixture:
    provider: str
    name: str
    path: Path
    data: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.data.get("source") or "")


def load_all(provider: str) -> list[Fixture]:
    out = []
    for path in sorted((HERE / provider).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique)
        out.append(Fixture(provider, path.stem, path, data))
    return out


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (a repeated key would silently drop one)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def source_keys(provider: str) -> dict[str, str]:
    """Each ``| key | source |`` row of ``<provider>/SOURCES.md``: key -> the source it names."""
    keys: dict[str, str] = {}
    for line in (HERE / provider / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`?([A-Za-z0-9_-]+)`?\s*\|\s*(.+?)\s*\|", line)
        if m and m.group(1).lower() not in ("key", "---"):
            keys[m.group(1)] = m.group(2)
    return keys


# ------------------------------------------------------------------------------------------
# the loopback server


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def _segments(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", pattern)
    regex = "".join(
        f"(?P<{p[1:-1]}>[^/]+)" if re.fullmatch(r"\{[a-z_]+\}", p) else re.escape(p) for p in parts
    )
    return re.compile(f"^{regex}$")


class FixtureServer:
    """Serves a fixture's exchanges in order on 127.0.0.1, checking each request as it comes."""

    def __init__(
        self, exchanges: list[dict[str, Any]], provider: str = "", key: str = UNLEASHED_KEY
    ) -> None:
        self.exchanges = exchanges
        self.key = key  # what an Unleashed signature must be made with
        # Unleashed signs every request's query (D-AUTH): checked unless a fixture says otherwise
        self.signs = provider == "unleashed"
        self.seen: list[Seen] = []
        self.failures: list[str] = []
        self.captured: dict[str, str] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parts.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                status, headers, payload = server.answer(seen)
                self.send_response_only(status)  # no Date or Server of its own: the fixture says
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            n = len(self.seen)
            self.seen.append(seen)
            if n >= len(self.exchanges):
                self.failures.append(
                    f"request {n + 1} was not expected: {seen.method} {seen.path}?{seen.query}"
                )
                return 599, {"Content-Type": "text/plain"}, b"unexpected request"
            exchange = self.exchanges[n]
            problems = self.check(exchange.get("request") or {}, seen)
            if problems:
                self.failures.extend(f"request {n + 1}: {p}" for p in problems)
            return self.render(exchange["response"])

    def check(self, want: dict[str, Any], seen: Seen) -> list[str]:
        problems = []
        if want.get("method", "GET").upper() != seen.method:
            problems.append(f"method {seen.method}, expected {want.get('method', 'GET')}")
        if "path" in want:
            m = _segments(want["path"]).match(seen.path)
            if not m:
                problems.append(f"path {seen.path!r}, expected {want['path']!r}")
            else:
                self.captured.update(m.groupdict())
        query = dict(parse_qsl(seen.query, keep_blank_values=True))
        for key, value in (want.get("query") or {}).items():
            if query.get(key) != value:
                problems.append(f"query {key}={query.get(key)!r}, expected {value!r}")
        for key, pattern in (want.get("query_like") or {}).items():
            if not re.search(pattern, query.get(key, "")):
                problems.append(f"query {key}={query.get(key)!r} does not match {pattern!r}")
        alternatives = want.get("query_one_of") or []
        if alternatives and not any(
            all(query.get(k) == v for k, v in alt.items()) for alt in alternatives
        ):
            problems.append(f"query {query!r} has none of {alternatives!r}")
        for key, value in (want.get("form") or {}).items():
            form = dict(parse_qsl(seen.body.decode("utf-8", "replace"), keep_blank_values=True))
            if form.get(key) != value:
                problems.append(f"form {key}={form.get(key)!r}, expected {value!r}")
        for part in want.get("raw_query_contains") or []:
            if part not in seen.query:
                problems.append(f"query {seen.query!r} does not hold {part!r} as sent")
        for key in want.get("query_absent") or []:
            if key in query:
                problems.append(f"query {key} sent ({query[key]!r}), expected none")
        for key, value in (want.get("headers") or {}).items():
            got = seen.headers.get(key.lower())
            if value is None and got is not None:
                problems.append(f"header {key}: {got!r}, expected none")
            elif value is not None and got != value:
                problems.append(f"header {key}: {got!r}, expected {value!r}")
        if want.get("signed", self.signs):
            expected = unleashed.sign(self.key, seen.query)
            if seen.headers.get("api-auth-signature") != expected:
                problems.append(f"api-auth-signature does not sign the query {seen.query!r}")
        if "body" in want:
            try:
                body = json.loads(seen.body or b"null")
            except ValueError:
                body = seen.body.decode("utf-8", "replace")
            for line in differences(want["body"], body, "body"):
                problems.append(line)
        return problems

    def render(self, response: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        headers = {"Date": "Mon, 05 Jan 2026 09:00:00 GMT", **(response.get("headers") or {})}
        if "text" in response:
            text = str(response["text"])
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif "body" in response:
            text = json.dumps(response["body"], ensure_ascii=False)
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        else:
            text = ""
        text = text.replace("{{base}}", self.url)
        for name, value in self.captured.items():
            text = text.replace("{{" + name + "}}", value)
        return int(response.get("status", 200)), headers, text.encode("utf-8")


# ------------------------------------------------------------------------------------------
# connectors


def connector_for(provider: str, base: str, settings: dict[str, Any]) -> Connector:
    clock = SimClock(NOW)
    ledger = MemoryLedger()
    if provider == "xero":
        store = MemoryTokenStore(Tokens(ACCESS, REFRESH, None, {"tenant_id": XERO_TENANT}))
        return xero.connect(
            {"base_url": base, "client_id": "conformance-client", **settings},
            {"client_secret": "conformance-client-secret"},
            token_store=store,
            ledger=ledger,
            clock=clock,
            pace=False,
            timeout=(5.0, 10.0),
        )
    if provider == "unleashed":
        return unleashed.connect(
            {"base_url": base, "api_id": UNLEASHED_ID, **settings},
            {"api_key": UNLEASHED_KEY},
            ledger=ledger,
            clock=clock,
            pace=False,
            timeout=(5.0, 10.0),
        )
    if provider == "lightspeed":
        store = MemoryTokenStore(Tokens(ACCESS, REFRESH, None, {}))
        return lightspeed.connect(
            {
                "base_url": base,
                "auth_url": base,
                "client_id": "conformance-client",
                "account_id": LIGHTSPEED_ACCOUNT,
                **settings,
            },
            {"client_secret": "conformance-client-secret"},
            token_store=store,
            ledger=ledger,
            clock=clock,
            pace=False,
            timeout=(5.0, 10.0),
        )
    if provider == "lightspeed-x":
        store = MemoryTokenStore(Tokens(ACCESS, REFRESH, None, {}))
        return lightspeed_x.connect(
            {
                "base_url": base,
                "domain_prefix": "conformance",
                "client_id": "conformance-client",
                **settings,
            },
            {"client_secret": "conformance-client-secret"},
            token_store=store,
            ledger=ledger,
            clock=clock,
            pace=False,
            timeout=(5.0, 10.0),
        )
    raise ValueError(provider)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def arguments(method: str, args: dict[str, Any]) -> list[Any] | dict[str, Any]:
    """The fixture's ``args`` as the connector method takes them."""
    if method in ("changed_products", "changed_stock", "changed_customers"):
        return [_when(args.get("since"))]
    if method == "get_products":
        return [list(args["remote_ids"])]
    if method in ("find_product", "find_invoice"):
        return [args["code" if method == "find_product" else "number"]]
    if method == "find_customers":
        return {k: args.get(k) for k in ("email", "account")}
    if method == "create_product":
        p = dict(args)
        p["price"] = _dec(p["price"])
        return [NewProduct(**p)]
    if method == "create_customer":
        return [NewCustomer(**args)]
    if method in ("post_invoice", "post_invoices"):
        drafts = args["invoices"] if method == "post_invoices" else [args["invoice"]]
        built = []
        for d in drafts:
            lines = [
                InvoiceLine(
                    **{
                        **ln,
                        "quantity": _dec(ln["quantity"]),
                        "unit_price": _dec(ln["unit_price"]),
                        "tax_rate": _dec(ln.get("tax_rate", "0")),
                    }
                )
                for ln in d["lines"]
            ]
            built.append(
                InvoiceDraft(
                    **{
                        **d,
                        "date": _when(d["date"]),
                        "due_date": _when(d.get("due_date")),
                        "total": _dec(d.get("total")),
                        "lines": lines,
                    }
                )
            )
        if method == "post_invoice":
            return [built[0], args.get("idempotency_key", "conformance-key-1")]
        keys = args.get("keys") or [f"conformance-key-{i}" for i in range(len(built))]
        return [list(zip(built, keys, strict=True))]
    if method == "apply_payments":
        return [
            [
                PaymentToApply(
                    p["invoice_remote_id"],
                    Decimal(str(p["amount"])),
                    _when(p["date"]) or datetime.now(UTC),
                    p["reference"],
                    p["account_code"],
                )
                for p in args["payments"]
            ]
        ]
    if method == "find_payments":
        return [list(args["invoice_remote_ids"])]
    if method == "ping":
        return []
    raise ValueError(f"unknown method {method}")


def plain(value: Any) -> Any:
    """A connector result as plain data: dataclasses as dicts, pages as their fields."""
    if isinstance(value, Iterator):
        return [plain(p) for p in value]
    if isinstance(value, Page):
        return {
            "records": [plain(r) for r in value.records],
            "cursor": value.cursor,
            "errors": list(value.errors),
            "relisted": value.relisted,
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Exception):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------
# comparing


def differences(want: Any, got: Any, where: str = "result") -> list[str]:
    """How ``got`` differs from ``want``: dicts on the keys ``want`` names, lists whole and in
    order, Decimals by value, datetimes by instant, strings and numbers exactly. A string
    ``{"contains": "..."}`` in ``want`` matches any string holding it, ``{"length": n}`` any
    list of n entries."""
    if isinstance(got, Decimal) and not isinstance(want, dict):
        if want is None or Decimal(str(want)) != got:
            return [f"{where}: {got!r}, expected {want!r}"]
        return []
    if isinstance(got, datetime):
        if want is None or _when(want) != got:
            return [f"{where}: {got.isoformat()}, expected {want!r}"]
        return []
    if isinstance(want, dict) and set(want) == {"length"} and isinstance(got, list):
        if len(got) != want["length"]:
            return [f"{where}: {len(got)} entries, expected {want['length']}"]
        return []
    if isinstance(want, dict) and set(want) == {"contains"}:
        if not isinstance(got, str) or want["contains"] not in got:
            return [f"{where}: {got!r} does not contain {want['contains']!r}"]
        return []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: {got!r}, expected an object"]
        out = []
        for key, value in want.items():
            if key not in got:
                out.append(f"{where}.{key}: missing")
            else:
                out.extend(differences(value, got[key], f"{where}.{key}"))
        return out
    if isinstance(want, list):
        if not isinstance(got, list):
            return [f"{where}: {got!r}, expected a list"]
        if len(want) != len(got):
            return [f"{where}: {len(got)} entries, expected {len(want)}: {repr(got)[:300]}"]
        out = []
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            out.extend(differences(w, g, f"{where}[{i}]"))
        return out
    if type(want) is not type(got) and not (
        isinstance(want, int | float) and isinstance(got, int | float)
    ):
        return [f"{where}: {got!r}, expected {want!r}"]
    return [] if want == got else [f"{where}: {got!r}, expected {want!r}"]
