"""``trace``: the history of one record — its links, every change with its run, every attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from synccli.errors import UsageError
from synccli.store.catalogue import product_by_sku
from synccli.store.db import Store
from synccli.store.invoices import payments_of
from synccli.store.models import Connection
from synccli.store.orders import customer_by_email
from synccli.store.reports import (
    attempts_with_jobs,
    events_of,
    job_of_order,
    links_of,
    order_by_number,
)
from synccli.sync.payments import PaymentView, payment_views


@dataclass
class TraceLine:
    at: datetime | None
    what: str
    detail: str
    run_id: int | None = None
    job: str | None = None


@dataclass
class Trace:
    kind: str
    key: str
    connection: str
    record: dict[str, Any]
    links: list[dict[str, Any]] = field(default_factory=list)
    history: list[TraceLine] = field(default_factory=list)
    # an invoice's payments, each with its state (posted, pending, refused) and remote id
    payments: list[PaymentView] = field(default_factory=list)


def _links(s: Any, conn: Connection, kind: str, local_id: int) -> list[dict[str, Any]]:
    return [
        {
            "remote_id": lk.remote_id,
            "remote_code": lk.remote_code,
            "state": lk.state,
            "origin": lk.origin,
            "last_synced_at": lk.last_synced_at,
            **_remote_stamp(conn.provider, lk.remote_updated_at),
        }
        for lk in links_of(s, conn.id, kind, local_id)
    ]


def _remote_stamp(provider: str, value: datetime | None) -> dict[str, Any]:
    """The record's stamp at the provider: ``remote_updated_at``, or ``remote_version`` where
    stamps are versions (kept as instants after 1970: never shown as a 1970 date)."""
    from synccli.sync.context import shown_stamp

    shown = shown_stamp(provider, value)
    if isinstance(shown, dict):
        return {"remote_version": shown["version"]}
    return {"remote_updated_at": shown}


def _events(s: Any, conn: Connection, kind: str, local_id: int) -> list[TraceLine]:
    return [
        TraceLine(ev.at, f"{ev.field} changed", f"{ev.old} -> {ev.new}", ev.run_id, job)
        for ev, job in events_of(s, conn.id, kind, local_id)
    ]


def trace(store: Store, conn: Connection, kind: str, key: str) -> Trace:
    """``kind`` is product (by SKU), customer (by email) or invoice (by order number)."""
    with store.session() as s:
        if kind == "product":
            product = product_by_sku(s, conn.id, key)
            if product is None:
                raise UsageError(f"no product with SKU {key!r} in connection {conn.name!r}")
            result = Trace(
                kind,
                key,
                conn.name,
                {
                    "sku": product.sku,
                    "name": product.name,
                    "price": product.price,
                    "stock": product.stock,
                    "active": product.active,
                    "updated_at": product.updated_at,
                },
            )
            result.links = _links(s, conn, "product", product.id)
            result.history = _events(s, conn, "product", product.id)
            return result
        if kind == "customer":
            customer = customer_by_email(s, conn.id, key.strip().lower())
            if customer is None:
                raise UsageError(f"no customer with email {key!r} in connection {conn.name!r}")
            result = Trace(
                kind,
                key,
                conn.name,
                {
                    "name": customer.name,
                    "email": customer.email,
                    "account_number": customer.account_number,
                },
            )
            result.links = _links(s, conn, "customer", customer.id)
            result.history = _events(s, conn, "customer", customer.id)
            return result
        if kind == "invoice":
            order = order_by_number(s, conn.id, key)
            if order is None:
                raise UsageError(f"no order numbered {key!r} in connection {conn.name!r}")
            job = job_of_order(s, order.id)
            result = Trace(
                kind,
                key,
                conn.name,
                {
                    "number": order.number,
                    "date": order.date,
                    "total": order.total,
                    "state": job.state if job else "not queued",
                    "remote_id": job.remote_id if job else None,
                    "attempts": job.attempts if job else 0,
                    "next_attempt_at": job.next_attempt_at
                    if job and job.state in ("pending", "failed", "waiting")
                    else None,
                    "last_error": job.last_error if job else None,
                    # a refund: the order it gives money back on (it waits for it)
                    **({"refund_of": order.refund_of} if order.refund_of else {}),
                },
            )
            result.payments = payment_views(conn.provider, payments_of(s, order.id), job)
            if job is not None:
                result.history.append(
                    TraceLine(job.created_at, "queued", f"key {job.idempotency_key}")
                )
                for attempt, run_job in attempts_with_jobs(s, job.id):
                    detail = attempt.error or attempt.summary or ""
                    result.history.append(
                        TraceLine(
                            attempt.at,
                            f"attempt: {attempt.outcome}",
                            detail,
                            attempt.run_id,
                            run_job,
                        )
                    )
            return result
    raise UsageError(f"trace: unknown kind {kind!r} (product, customer or invoice)")
