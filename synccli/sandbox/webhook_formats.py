"""Each provider's webhooks as its simulator sends them: which change raises which event, the body,
the signature, the retries and how a subscription is registered.

Sources (keys as in the provider notes under ``providers/``):

Lightspeed X-Series [D-WH: ``docs.vendhq.com/docs/webhooks``, "Payload", "Request timeout and
retries" and "Verification"; SPEC ``/webhooks``]: a POST, UTF-8, form-encoded, whose ``payload``
field is the changed record as JSON **in the API 1.0 shape** ("the same as if you requested
/api/1.0/product/{id}"); "other form fields (such as environment or domain_prefix) may be present
but are not guaranteed", so ``domain_prefix`` is sent and the event's type is not
(``send_type=True`` adds it). Answer 2xx within 5 s or the request is retried "up to 20 times over
48h ... with exponential back-off". Deliveries to an OAuth app are signed: ``X-Signature:
signature=<HMAC>,algorithm=HMAC-SHA256`` over the raw body with the app's ``client_secret``; a
webhook made with a personal token has no app, so its deliveries carry no signature ("if the
webhook request contains a header as below"). The digest's encoding is not documented
(**unconfirmed**): hex here. Events: ``product.update`` (fields), ``inventory.update`` (stock of a
tracked product), ``customer.update`` (created, changed, deleted); no delete events [SPEC; AE].
Registration: ``POST /webhooks`` ``{active, type, url}`` (all required), 409 for a duplicate type
and URL, ``GET/PUT/DELETE /webhooks/{id}``, scope ``webhooks`` [SPEC].

Xero [``developer.xero.com/documentation/webhooks/configuring-your-server``; OAS-ID
``xero-webhooks.yaml``]: JSON ``{"events": [...], "firstEventSequence", "lastEventSequence",
"entropy"}``, each event ``resourceUrl``, ``resourceId``, ``eventDateUtc``, ``eventType`` (CREATE,
UPDATE), ``eventCategory`` (CONTACT, INVOICE; no Items), ``tenantId``, ``tenantType``; the record
itself is not in it. ``x-xero-signature``: base64 HMAC-SHA256 of the body with the webhook key. The
endpoint must answer 200 with **no body** within 5 s (else it is retried "with decreasing frequency
for up to 24 hours. After 24 hours the webhook will be disabled"); a subscription starts with an
"Intent to receive" check: several POSTs with ``"events": []``, some signed with the key and some
not; only 200 to every good one and 401 to every bad one makes it active. Subscriptions are made
in the developer portal only: the sandbox's stand-in is ``POST /sandbox/webhooks`` (no such route
exists at Xero).

Unleashed [D-WH ``apidocs.unleashedsoftware.com/Webhooks``: events Customer and Product created /
updated / deleted, at most 5 subscriptions an account, the same API auth as the rest of the API;
the body's shape and the signature as integrators implement them, since the page's later
sections were not retrievable (**unconfirmed**)]: JSON ``{eventNotificationId, subscriptionId,
eventType, createdOn, data}`` with ``data`` a JSON string holding the record's ``Guid`` only (the
record is fetched); ``x-unleashed-timestamp`` (Unix seconds) and ``x-unleashed-signature``, base64
HMAC-SHA256 of ``"{timestamp}.{body}"`` with the subscription's signature key (returned once, at
creation), signed afresh for each attempt. No retry schedule could be found: one attempt, never
retried (the harsher reading; ``retries`` sets one). Stock on hand raises no event (not in the
list). Registration: ``POST /webhooks/subscriptions`` ``{notificationUrl, eventTypes}``
(**unconfirmed** path), ``GET``, ``DELETE /webhooks/subscriptions/{id}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from synccli.sandbox.core import Request, Response, json_body
from synccli.sandbox.data import Customer, Product
from synccli.sandbox.webhooks import Delivery, Format, Outbox, Policy, Subscription, backoff

PRODUCT_FIELDS = frozenset({"code", "name", "description", "price", "archived", "tracked"})
CUSTOMER_FIELDS = frozenset(
    {"name", "first_name", "last_name", "email", "account_number", "code", "archived"}
)


def hmac_sha256(key: str | bytes, message: bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(raw, message, hashlib.sha256).digest()


def _stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


# --- Lightspeed X-Series --------------------------------------------------------------------------
class LightspeedXFormat(Format):
    policy = Policy(retry_delays=backoff(30.0, 20, 48 * 3600.0))

    def __init__(self, app: Any, send_type: bool = False) -> None:
        self.app = app
        self.send_type = send_type

    def events(self, record: Any, what: str) -> list[str]:
        if isinstance(record, Product):
            if what in PRODUCT_FIELDS or what == "added":
                return ["product.update"]
            if what == "stock" and record.tracked:
                return ["inventory.update"]
        elif isinstance(record, Customer) and (what in CUSTOMER_FIELDS or what == "added"):
            return ["customer.update"]
        return []

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        if d.event == "customer.update":
            payload = self._customer(d.record)
        elif d.event == "inventory.update":
            product = self._product(d.record)
            payload = {**product["inventory"][0], "product_id": d.record.id, "product": product}
        else:
            payload = self._product(d.record)
        form = {"payload": json.dumps(payload), "domain_prefix": self.app.domain_prefix}
        if self.send_type:
            form["type"] = d.event
        body = urlencode(form).encode("utf-8")
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
        if d.sub.secret:
            digest = hmac_sha256(d.sub.secret, body).hex()
            headers["X-Signature"] = f"signature={digest},algorithm=HMAC-SHA256"
        return body, headers

    def _product(self, p: Product) -> dict[str, Any]:
        """A product as API 1.0 shows it (``/api/1.0/product/{id}``): price tax-exclusive, the
        stock per outlet as text, times as ``YYYY-MM-DD HH:MM:SS`` in UTC."""
        gone = p.id not in self.app.world().products
        outlet = self.app.outlets[0]
        return {
            "id": p.id,
            "source_id": "",
            "handle": p.code.lower().replace(" ", "-"),
            "type": "",
            "has_variants": False,
            "variant_parent_id": "",
            "active": not p.archived,
            "name": p.name,
            "base_name": p.name,
            "description": p.description,
            "sku": p.code,
            "tags": "",
            "supply_price": "0.00",
            "track_inventory": p.tracked,
            "inventory": [
                {
                    "outlet_id": outlet["id"],
                    "outlet_name": outlet.get("name", ""),
                    "count": f"{p.stock:.5f}",
                    "reorder_point": "0",
                    "restock_level": "0",
                }
            ],
            "price": _money(p.price),
            "tax": _money(p.price * Decimal("0.15")),
            "tax_id": self.app.gst_id,
            "tax_rate": 0.15,
            "tax_name": "GST",
            "display_retail_price_tax_inclusive": 1,
            "updated_at": _stamp(p.updated_at),
            "deleted_at": _stamp(self.app.clock.now()) if gone else None,
        }

    def _customer(self, c: Customer) -> dict[str, Any]:
        return {
            "id": c.id,
            "name": c.name,
            "customer_code": c.account_number or c.code,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "email": c.email,
            "company_name": "",
            "phone": "",
            "mobile": "",
            "balance": "0.00000",
            "updated_at": _stamp(c.updated_at),
            "deleted_at": _stamp(c.updated_at) if c.archived else None,
        }


LSX_KINDS = (
    "sale.update",
    "product.update",
    "customer.update",
    "inventory.update",
    "register_closure.create",
    "consignment.send",
    "consignment.receive",
)  # [SPEC WebhookType]


def _lsx_error(status: int, message: str) -> Response:
    return Response(status, {"error": message})  # [SPEC] the webhook calls' error body


class _LightspeedXRoutes:
    """``/webhooks`` [SPEC]: list, create (409 for a duplicate type and URL), read, put, delete."""

    def __init__(self, app: Any, outbox: Outbox) -> None:
        self.app, self.outbox = app, outbox

    def shown(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": sub.id,
            "retailer_id": self.app.domain_prefix,
            "type": next(iter(sub.events)),
            "url": sub.url,
            "active": sub.active,
        }

    @staticmethod
    def checked(req: Request) -> dict[str, Any] | Response:
        body = json_body(req)
        if not isinstance(body, dict):
            return _lsx_error(400, "body must be a JSON object")
        missing = [k for k in ("active", "type", "url") if k not in body]
        if missing:  # [SPEC WebhookRequest: all three required]
            return _lsx_error(400, f"missing {', '.join(missing)}")
        if not isinstance(body["active"], bool) or body["type"] not in LSX_KINDS:
            return _lsx_error(400, "active must be a boolean, type one of " + ", ".join(LSX_KINDS))
        if not isinstance(body["url"], str) or len(body["url"]) < 3:
            return _lsx_error(400, "url must be a string of at least 3 characters")
        return body

    def duplicate(self, body: dict[str, Any], but: str | None = None) -> Response | None:
        for s in self.outbox.subscriptions.values():
            if s.url == body["url"] and body["type"] in s.events and s.id != but:
                return _lsx_error(409, "A webhook with this type and URL already exists.")
        return None

    def create(self, req: Request) -> Response:
        body = self.checked(req)
        if isinstance(body, Response):
            return body
        clash = self.duplicate(body)
        if clash is not None:
            return clash
        auth = req.header("authorization") or ""
        token = self.app.tokens.get(auth[7:].strip())
        # signed with the app's client secret; a personal token's webhook has no app [D-WH]
        secret = self.app.clients.get(token.client_id) if token and token.expires_at else None
        try:
            sub = self.outbox.subscribe(body["url"], [body["type"]], secret, self.app.tenant)
        except ValueError as err:
            return _lsx_error(400, str(err))
        sub.active = body["active"]
        return Response(201, {"data": self.shown(sub)})

    def listing(self, req: Request) -> Response:
        return Response(200, {"data": [self.shown(s) for s in self.outbox.subscriptions.values()]})

    def one(self, req: Request, wid: str) -> Response:
        sub = self.outbox.subscriptions.get(wid)
        if sub is None:
            return _lsx_error(404, "Not Found")
        if req.method == "DELETE":
            self.outbox.unsubscribe(wid)
            return Response(200, None)
        if req.method == "PUT":
            body = self.checked(req)
            if isinstance(body, Response):
                return body
            clash = self.duplicate(body, but=wid)
            if clash is not None:
                return clash
            sub.url, sub.events, sub.active = body["url"], frozenset([body["type"]]), body["active"]
        return Response(200, {"data": self.shown(sub)})


def install_lightspeed_x(app: Any, api: str) -> Outbox:
    """The X-Series simulator's sender and its ``/webhooks`` routes [SPEC]."""
    outbox = Outbox(app, LightspeedXFormat(app))
    routes = _LightspeedXRoutes(app, outbox)
    app.route("POST", f"{api}/webhooks", "webhooks", routes.create)
    app.route("GET", f"{api}/webhooks", "webhooks", routes.listing)
    for method in ("GET", "PUT", "DELETE"):
        app.route(method, f"{api}/webhooks/(?P<wid>[^/]+)", "webhooks/{id}", routes.one)
    return outbox


# --- Xero -----------------------------------------------------------------------------------------
class XeroFormat(Format):
    policy = Policy(
        retry_delays=backoff(60.0, 14, 24 * 3600.0),
        empty_answer=True,
        disable_after=24 * 3600.0,
    )
    ITR_GOOD, ITR_BAD = 2, 2  # intent-to-receive POSTs signed with the key, and not

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sequence = 0

    def events(self, record: Any, what: str) -> list[str]:
        if isinstance(record, Customer) and (what in CUSTOMER_FIELDS or what == "added"):
            return ["CONTACT"]  # Items raise no event [OAS-ID]
        return []

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        self.sequence += 1
        event = {
            "resourceUrl": f"https://api.xero.com/api.xro/2.0/Contacts/{d.record.id}",
            "resourceId": d.record.id,
            "eventDateUtc": d.made.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
            "eventType": "CREATE" if d.what == "added" else "UPDATE",
            "eventCategory": d.event,
            "tenantId": d.sub.tenant,
            "tenantType": "ORGANISATION",
        }
        body = self.envelope([event], self.sequence, self.sequence)
        return body, self.headers(body, d.sub.secret or "")

    @staticmethod
    def envelope(events: list[dict[str, Any]], first: int, last: int) -> bytes:
        entropy = secrets.token_hex(10).upper()
        doc = {
            "events": events,
            "firstEventSequence": first,
            "lastEventSequence": last,
            "entropy": entropy,
        }
        return json.dumps(doc).encode("utf-8")

    @staticmethod
    def headers(body: bytes, key: str) -> dict[str, str]:
        signature = base64.b64encode(hmac_sha256(key, body)).decode("ascii")
        return {"Content-Type": "application/json; charset=utf-8", "x-xero-signature": signature}


def intent_to_receive(outbox: Outbox, sub: Subscription, now: datetime) -> None:
    """Xero's check of a new (or re-enabled) subscription: it becomes OK only if every correctly
    signed request got 200 and every incorrectly signed one 401, each in time and without a body."""
    fmt = outbox.format
    assert isinstance(fmt, XeroFormat)
    passed = True
    tries = [True] * fmt.ITR_GOOD + [False] * fmt.ITR_BAD
    outbox.rng.shuffle(tries)
    for good in tries:
        body = fmt.envelope([], 0, 0)
        key = (sub.secret or "") if good else secrets.token_urlsafe(32)
        status, ok = outbox.post(sub.url, body, fmt.headers(body, key))
        expected = ok if good else status == 401
        passed = passed and expected
        sub.extra.setdefault("intent_answers", []).append((good, status))
    sub.status = "OK" if passed else "INTENT_FAILED"
    outbox.stats["intent_ok" if passed else "intent_failed"] += 1


def install_xero(app: Any) -> Outbox:
    """Xero's sender and the sandbox-only stand-in for the developer portal's webhook page."""
    outbox = Outbox(app, XeroFormat(app))
    outbox.check = intent_to_receive

    def shown(sub: Subscription, key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": sub.id,
            "url": sub.url,
            "status": sub.status,
            "tenantId": sub.tenant,
        }
        if key:
            out["key"] = sub.secret
        return out

    def create(req: Request) -> Response:
        body = json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return Response(400, {"message": "url required"})
        tenant = str(body.get("tenantId") or app.tenant).lower()
        key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        try:
            sub = outbox.subscribe(body["url"], ["CONTACT"], key, tenant, status="PENDING")
        except ValueError as err:
            return Response(400, {"message": str(err)})
        return Response(201, shown(sub, key=True))

    def one(req: Request, wid: str) -> Response:
        sub = outbox.subscriptions.get(wid)
        if sub is None:
            return Response(404, {"message": "no such webhook"})
        if req.method == "POST":  # re-enable: a new intent-to-receive check
            sub.status, sub.failing_since = "PENDING", None
            outbox.checks.append(sub)
        return Response(200, shown(sub))

    app.route("POST", "/sandbox/webhooks", "sandbox.webhooks", create)
    app.route("GET", "/sandbox/webhooks/(?P<wid>[^/]+)", "sandbox.webhooks", one)
    app.route("POST", "/sandbox/webhooks/(?P<wid>[^/]+)/intent", "sandbox.webhooks", one)
    return outbox


# --- Unleashed ------------------------------------------------------------------------------------
class UnleashedFormat(Format):
    policy = Policy(retry_delays=())
    KINDS = (
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "product.created",
        "product.updated",
        "product.deleted",
    )

    def __init__(self, app: Any, retries: int = 0) -> None:
        self.app = app
        if retries:
            self.policy = Policy(retry_delays=backoff(60.0, retries, 24 * 3600.0))

    def events(self, record: Any, what: str) -> list[str]:
        kind = "product" if isinstance(record, Product) else "customer"
        if isinstance(record, Product) and what not in PRODUCT_FIELDS | {"added", "deleted"}:
            return []  # stock on hand is not a product change (no event listed for it)
        if isinstance(record, Customer) and what not in CUSTOMER_FIELDS | {"added"}:
            return []
        verb = {"added": "created", "deleted": "deleted"}.get(what, "updated")
        return [f"{kind}.{verb}"]

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        doc = {
            "eventNotificationId": str(uuid.uuid4()),
            "subscriptionId": d.sub.id,
            "eventType": d.event,
            "createdOn": d.made.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "data": json.dumps({"Guid": d.record.id}),
        }
        return json.dumps(doc).encode("utf-8"), {"Content-Type": "application/json"}

    def sign(self, d: Delivery, now: datetime) -> dict[str, str]:
        stamp = str(int(now.timestamp()))
        message = stamp.encode("ascii") + b"." + (d.body or b"")
        digest = base64.b64encode(hmac_sha256(d.sub.secret or "", message)).decode("ascii")
        return {"x-unleashed-timestamp": stamp, "x-unleashed-signature": digest}


def install_unleashed(app: Any) -> Outbox:
    """Unleashed's sender and its subscription routes (through the API's own auth)."""
    outbox = Outbox(app, UnleashedFormat(app))

    def shown(sub: Subscription, key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subscriptionId": sub.id,
            "notificationUrl": sub.url,
            "eventTypes": sorted(sub.events),
            "status": "Active" if sub.active else "Inactive",
        }
        if key:
            out["signatureKey"] = sub.secret
        return out

    def fail(status: int, message: str) -> Response:
        return Response(status, {"description": message})

    def create(req: Request) -> Response:
        tenant = req.environ["unleashed.tenant"]
        body = json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("notificationUrl"), str):
            return fail(400, "notificationUrl is required")
        kinds = body.get("eventTypes")
        known = UnleashedFormat.KINDS
        if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(known):
            return fail(400, "eventTypes must list one or more of " + ", ".join(known))
        if sum(1 for s in outbox.subscriptions.values() if s.tenant == tenant) >= 5:
            return fail(400, "Maximum of 5 webhook subscriptions per account")  # [D-WH]
        key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        sub_id = str(uuid.uuid4())
        try:
            sub = outbox.subscribe(body["notificationUrl"], kinds, key, tenant, sub_id=sub_id)
        except ValueError as err:
            return fail(400, str(err))
        return Response(201, shown(sub, key=True))

    def listing(req: Request) -> Response:
        tenant = req.environ["unleashed.tenant"]
        items = [shown(s) for s in outbox.subscriptions.values() if s.tenant == tenant]
        return Response(200, {"Items": items})

    def delete(req: Request, wid: str) -> Response:
        sub = outbox.subscriptions.get(wid)
        if sub is None or sub.tenant != req.environ["unleashed.tenant"]:
            return fail(404, "Subscription not found")
        outbox.unsubscribe(wid)
        return Response(204, None)

    app.route("POST", "/webhooks/subscriptions", "WebhookSubscriptions", create)
    app.route("GET", "/webhooks/subscriptions", "WebhookSubscriptions", listing)
    app.route("DELETE", "/webhooks/subscriptions/(?P<wid>[^/]+)", "WebhookSubscriptions", delete)
    return outbox
