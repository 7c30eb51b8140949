"""Each provider's delivery body, read into :class:`WebhookEvent` values.

A body that is not what the provider sends raises :class:`Malformed` (the receiver answers 400
and stores nothing); an event of a kind synccli does not follow (a Xero subscription event, an
X-Series register closure) is left out, and the delivery still answered 200 so the provider does
not retry it or turn the webhook off. Shapes and sources: docs/providers.md, "Webhooks".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from synccli.clock import utc
from synccli.webhooks.events import WebhookEvent

ID_LENGTH = 100  # webhook_events.entity_id

# Xero: eventCategory -> stream (CREDITNOTE and SUBSCRIPTION are not followed) [Xero-OpenAPI]
XERO_STREAMS = {"CONTACT": "customers", "INVOICE": "invoices"}
# X-Series: webhook type -> stream [SPEC WebhookType]
X_SERIES_STREAMS = {
    "product.update": "products",
    "inventory.update": "stock",
    "customer.update": "customers",
    "sale.update": "sales",
}
# Unleashed: the object of "<object>.<created|updated|deleted>" -> stream [D-WH "Available Events"]
UNLEASHED_STREAMS = {"product": "products", "customer": "customers"}
UNLEASHED_IDS = {
    "products": ("productGuid", "ProductGuid"),
    "customers": ("customerGuid", "CustomerGuid"),
}


class Malformed(ValueError):
    """The body is not a delivery of this provider's (answered 400, nothing stored)."""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON ({type(exc).__name__})") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise Malformed(f"{what} missing")
    text = str(value).strip()
    if len(text) > ID_LENGTH:
        raise Malformed(f"{what} longer than {ID_LENGTH} characters")
    return text


def _instant(value: Any, what: str) -> datetime:
    """An ISO time; without a zone it is UTC (Xero's ``eventDateUtc``, X-Series 1.0 stamps)."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{what} missing")
    text = value.strip().replace(" ", "T", 1).removesuffix("Z")
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        raise Malformed(f"{what} is not a time") from None


def _event(
    provider: str,
    stream: str,
    entity: str,
    version: str | None,
    at: datetime,
    record: dict[str, Any] | None,
    key: str,
) -> WebhookEvent:
    # the connection is known only once the receiver routes the event (see app.py)
    return WebhookEvent(provider, 0, stream, entity, version, at, record, key)


def xero_events(body: bytes) -> list[tuple[str, WebhookEvent]]:
    """(tenantId, event) of each followed event. An intent-to-receive request carries none."""
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise Malformed("no events list")
    found: list[tuple[str, WebhookEvent]] = []
    for raw in data["events"]:
        if not isinstance(raw, dict):
            raise Malformed("an event is not an object")
        stream = XERO_STREAMS.get(str(raw.get("eventCategory", "")))
        if stream is None:
            continue
        tenant = _text(raw.get("tenantId"), "tenantId")
        entity = _text(raw.get("resourceId"), "resourceId")
        kind = _text(raw.get("eventType"), "eventType")
        at = _instant(raw.get("eventDateUtc"), "eventDateUtc")
        version = at.isoformat()
        # no event id: the same resource, change and instant is the same event
        key = f"xero:{raw['eventCategory']}:{entity}:{kind}:{version}"
        found.append((tenant, _event("xero", stream, entity, version, at, None, key)))
    return found


def lightspeed_x_event(
    body: bytes, query_type: str | None, received: datetime
) -> WebhookEvent | None:
    """The one change a delivery carries: the form field ``payload`` holds the record in the API
    1.0 shape; ``type`` is a form field where sent, else the one our URL names."""
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise Malformed("not a form") from None
    payload = form.get("payload", [None])[0]
    kind = form.get("type", [query_type])[0] or query_type
    if payload is None:
        raise Malformed("no payload field")
    if not kind:
        raise Malformed("no type (neither a form field nor in the URL)")
    record = _json(payload.encode("utf-8"))
    if not isinstance(record, dict):
        raise Malformed("payload is not an object")
    stream = X_SERIES_STREAMS.get(kind)
    if stream is None:
        return None
    # an inventory record is one product's level at one outlet: the product is what changed
    entity = _text(record.get("product_id") if stream == "stock" else record.get("id"), "id")
    place = f":{record.get('outlet_id')}" if stream == "stock" else ""
    version = record.get("version")
    stamp = record.get("updated_at")
    at = _instant(stamp, "updated_at") if stamp else received
    if version is not None:
        version = _text(version, "version")
        key = f"{kind}:{entity}{place}:v{version}"
    elif stamp:
        version = at.isoformat()
        key = f"{kind}:{entity}{place}:{version}"
    else:  # neither: only the whole record tells a retry from the next change
        key = f"{kind}:{entity}{place}:sha256:{hashlib.sha256(payload.encode()).hexdigest()}"
        event = _event("lightspeed-x", stream, entity, version, at, record, key)
        return dataclasses.replace(event, by_payload=True)
    return _event("lightspeed-x", stream, entity, version, at, record, key)


def _unleashed_data(data: dict[str, Any]) -> dict[str, Any]:
    inner = data.get("data", data.get("Data"))
    if isinstance(inner, str):  # some deliveries carry it as a JSON string
        inner = _json(inner.encode("utf-8"))
    if not isinstance(inner, dict):
        raise Malformed("no data object")
    return inner


def unleashed_event(body: bytes, received: datetime) -> WebhookEvent | None:
    """The change a delivery names: its kind (``product.updated``...), the record's Guid (only
    the id: the next pull fetches the record) and the delivery's own id where it has one."""
    data = _json(body)
    if not isinstance(data, dict):
        raise Malformed("not an object")
    kind = _text(data.get("eventType", data.get("EventType")), "eventType").lower()
    stream = UNLEASHED_STREAMS.get(kind.split(".", 1)[0])
    if stream is None:
        return None
    inner = _unleashed_data(data)
    guid = next((inner[k] for k in (*UNLEASHED_IDS[stream], "guid", "Guid") if inner.get(k)), None)
    entity = _text(guid, "the record's Guid")
    stamp = data.get("createdOn", data.get("CreatedOn"))
    at = _instant(stamp, "createdOn") if stamp else received
    notification = data.get("eventNotificationId", data.get("EventNotificationId"))
    if notification:
        key = f"unleashed:{_text(notification, 'eventNotificationId')}"
    else:
        key = f"unleashed:{kind}:{entity}:{at.isoformat()}"
    return _event("unleashed", stream, entity, at.isoformat(), at, None, key)
