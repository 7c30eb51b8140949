"""Changed records as providers push them (#23), in the normalised form a pull reads.

A webhook whose payload carries the changed record is applied without an API call, through the
same code a pull applies its pages with; this module only reads the payload's shape, as each
connector reads its listings (and reuses the connector's own reading where the shape is the
same). A record it cannot read is ``None``: the caller then treats the delivery as an id to
fetch (a hint), never as nothing.

Lightspeed X-Series [notes providers/lightspeed-x.md §11; D-WH ``/docs/webhooks``]: the form field
``payload`` holds the record "the same as if you requested /api/1.0/product/{id}", the **API 1.0
shape**, which is not the 2026-07 shape a pull reads:

===============================  ==========================  ====================================
what                             1.0 (webhook)               2026-07 (pull)
===============================  ==========================  ====================================
tax-exclusive price              ``price`` (a number)        ``price_excluding_tax``
full name of a variant           ``name`` (``base_name``:    ``variant_name`` (``name``: the
                                 the family)                 family)
active                           ``active`` (true/false; 0/1 ``active`` (boolean)
                                 and "0"/"1" are posted)
deleted                          ``deleted_at`` ("" when     ``deleted_at`` (null when not)
                                 not)
stock                            ``inventory.update``: one   a separate feed (``/inventory``)
                                 record, ``count`` (a
                                 decimal string)
change stamp                     ``updated_at`` "YYYY-MM-DD  ``version`` (the store's counter)
                                 HH:MM:SS" (UTC); ``version``
                                 when the payload has it
===============================  ==========================  ====================================

The 1.0 product example re-expressed in ``tests/data/webhooks/x_series_product_1_0.json`` (its
source named there) has every field read here. ``inventory.update`` carries one inventory record
(``product_id``, ``outlet_id``, ``count``; the product may be embedded as ``product``).
``customer.update`` carries a 1.0 customer, whose fields the pull's reading already knows
(``first_name``, ``last_name``, ``email``, ``customer_code``, ``deleted_at``, ``version``).

Unleashed: a payload that carries the record carries it as the API returns it (``Guid``,
``ProductCode``, ``LastModifiedOn``...), read by the connector's own parser; one that carries only
the Guid is a hint.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from synccli.connectors.base import RemoteCustomer, RemoteProduct, RemoteStock
from synccli.connectors.paging import ROW_ERRORS
from synccli.connectors.wire import version_stamp

READ_ERRORS: tuple[type[Exception], ...] = (*ROW_ERRORS, InvalidOperation)


@dataclass
class Pushed:
    """What one pushed record says: the product and/or its stock, or the customer, with the
    stamp that orders it against what the store holds (``ranked``: a stamp in the same units as
    the store's, else only ``changed_at``, the provider's change time)."""

    product: RemoteProduct | None = None
    stock: RemoteStock | None = None
    customer: RemoteCustomer | None = None
    ranked: bool = False  # the record's ``updated_at`` is comparable with the store's stamps
    changed_at: datetime | None = None  # the provider's time of the change, when it says


def read(provider: str, stream: str, record: dict[str, Any], outlet: str | None) -> Pushed | None:
    """The record of one delivery, or None when it cannot be read (then it is fetched by id):
    read by the function the provider's registry entry names (``WebhookSupport.records``).
    ``outlet``: the outlet whose stock is the shop's (None: unknown, stock not read)."""
    from synccli import registry

    support = registry.get(provider).webhooks
    if support is None or support.records is None:
        return None
    module, function = support.records.split(":", 1)
    try:
        found: Pushed | None = getattr(importlib.import_module(module), function)(
            stream, record, outlet
        )
    except READ_ERRORS:
        return None
    return found


# --- Lightspeed X-Series (API 1.0 shape) --------------------------------------------------------


def read_v1(stream: str, record: dict[str, Any], outlet: str | None) -> Pushed | None:
    """A Lightspeed X-Series record in the API 1.0 shape (the table above)."""
    if stream == "products":
        return _x_product(record)
    if stream == "stock":
        return _x_inventory(record, outlet)
    if stream == "customers":
        from synccli.connectors.lightspeed_x import _customer  # the pull's reading: same keys

        customer = _customer(record)
        ranked = customer.updated_at is not None  # a version: the store keeps versions
        if not ranked:
            customer.updated_at = None
        return Pushed(customer=customer, ranked=ranked, changed_at=_v1_time(record))
    return None


def _x_product(record: dict[str, Any]) -> Pushed | None:
    rid = str(record["id"]).strip().lower()
    if not rid:
        return None
    code = record.get("sku")
    if code is not None and not isinstance(code, str):
        raise ValueError("sku is not a string")
    name = str(record.get("variant_name") or record.get("name") or "")
    described = record.get("description")
    product = RemoteProduct(
        remote_id=rid,
        code=code if code and code.strip() else "",
        name=name,
        description=str(described) if described else None,
        price=_decimal(record.get("price")),
        active=_active(record.get("active", True)) and not record.get("deleted_at"),
    )
    version = _version(record)
    if version is not None:
        product.updated_at = version_stamp(version)
    # The product's ``inventory`` list is not applied: its counts are as of whenever the payload
    # was made, which no stamp tells, while inventory.update orders every stock change.
    return Pushed(product=product, ranked=version is not None, changed_at=_v1_time(record))


def _x_inventory(record: dict[str, Any], outlet: str | None) -> Pushed | None:
    embedded = record.get("product")
    embedded = embedded if isinstance(embedded, dict) else {}
    rid = str(record.get("product_id") or embedded.get("id") or "").strip().lower()
    placed = record.get("outlet")
    where = record.get("outlet_id") or (placed.get("id") if isinstance(placed, dict) else None)
    if not rid or outlet is None or where is None:
        return None
    if str(where).lower() != outlet.lower():
        return Pushed(changed_at=_v1_time(record))  # another outlet's stock: nothing of ours
    count = _decimal(record.get("count", record.get("inventory_level")))
    if count is None:
        return None
    if record.get("deleted_at"):
        count = Decimal(0)  # as the pull reads a deleted product's row: none left to sell
    version = _version(record)
    stamp = version_stamp(version) if version is not None else None
    return Pushed(
        stock=RemoteStock(rid, count, None, stamp),
        ranked=version is not None,
        changed_at=_v1_time(record),
    )


def _version(record: dict[str, Any]) -> int | None:
    value = record.get("version")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _active(value: Any) -> bool:
    """1.0's ``active``: returned as a boolean, posted as "0"/"1" (seen back as 0/1)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("0", "false", ""):
            return False
        if text in ("1", "true"):
            return True
    raise ValueError(f"active {str(value)[:20]!r} is not a boolean")


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def _v1_time(record: dict[str, Any]) -> datetime | None:
    """1.0's ``updated_at``: "YYYY-MM-DD HH:MM:SS", UTC (an ISO form is read too)."""
    raw = record.get("updated_at")
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        when = datetime.fromisoformat(raw.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
