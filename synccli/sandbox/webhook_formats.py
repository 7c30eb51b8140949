"""Lightspeed X-Series' webhooks as its simulator sends them: which change raises which event,
the body, the signature, the retries and how a subscription is registered (it stays out of
sandbox/lightspeed_x.py, at its size limit).

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

Xero's and Unleashed's formats are in their simulators' modules (sandbox/xero.py,
sandbox/unleashed.py); the shared machinery in sandbox/webhooks.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from synccli.sandbox.core import Request, Response, json_body
from synccli.sandbox.data import Customer, Product
from synccli.sandbox.webhooks import (
    CUSTOMER_FIELDS,
    PRODUCT_FIELDS,
    Delivery,
    Format,
    Outbox,
    Policy,
    Subscription,
    backoff,
    hmac_sha256,
)


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
