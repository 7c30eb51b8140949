"""Reading a delivery's body into :class:`WebhookEvent` values: the provider-neutral part.

Each provider's own reading is its connector module's ``webhook_events`` (the registry entry's
``webhooks`` says it has one); it builds on the helpers here.

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


class Malformed(ValueError):
    """The body is not a delivery of this provider's (answered 400, nothing stored)."""


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON ({type(exc).__name__})") from None


def text(value: Any, what: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise Malformed(f"{what} missing")
    text = str(value).strip()
    if len(text) > ID_LENGTH:
        raise Malformed(f"{what} longer than {ID_LENGTH} characters")
    return text


def instant(value: Any, what: str) -> datetime:
    """An ISO time; without a zone it is UTC (Xero's ``eventDateUtc``, X-Series 1.0 stamps)."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{what} missing")
    text = value.strip().replace(" ", "T", 1).removesuffix("Z")
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        raise Malformed(f"{what} is not a time") from None


def event(
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


def form_delivery(body: bytes, query_type: str | None) -> tuple[str, str, dict[str, Any]]:
    """(kind, payload text, record) of a form-encoded delivery whose field ``payload`` holds the
    record as JSON; ``type`` is a form field where sent, else the one our URL names."""
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
    record = json_body(payload.encode("utf-8"))
    if not isinstance(record, dict):
        raise Malformed("payload is not an object")
    return kind, payload, record


def record_event(
    provider: str,
    kind: str,
    stream: str,
    entity: str,
    place: str,
    record: dict[str, Any],
    payload: str,
    received: datetime,
) -> WebhookEvent:
    """The event of a delivery carrying the whole record, keyed by its ``version``, else its
    ``updated_at``, else (neither) the payload's digest: only the whole record then tells a
    retry from the next change."""
    version = record.get("version")
    stamp = record.get("updated_at")
    at = instant(stamp, "updated_at") if stamp else received
    if version is not None:
        version = text(version, "version")
        key = f"{kind}:{entity}{place}:v{version}"
    elif stamp:
        version = at.isoformat()
        key = f"{kind}:{entity}{place}:{version}"
    else:
        key = f"{kind}:{entity}{place}:sha256:{hashlib.sha256(payload.encode()).hexdigest()}"
        found = event(provider, stream, entity, version, at, record, key)
        return dataclasses.replace(found, by_payload=True)
    return event(provider, stream, entity, version, at, record, key)
