"""``trace``: the history of one record — its links, every change with its run, every attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from synccli.errors import UsageError
from synccli.store.db import Store
from synccli.store.models import (
    Connection,
    Customer,
    Event,
    InvoiceAttempt,
    InvoiceJob,
    Link,
    Order,
    Product,
    Run,
)


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


def _links(s: Any, conn: Connection, kind: str, local_id: int) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(Link).where(
            Link.connection_id == conn.id, Link.kind == kind, Link.local_id == local_id
        )
    )
    return [
        {
            "remote_id": lk.remote_id,
            "remote_code": lk.remote_code,
            "state": lk.state,
            "origin": lk.origin,
            "last_synced_at": lk.last_synced_at,
            "remote_updated_at": lk.remote_updated_at,
        }
        for lk in rows
    ]


def _events(s: Any, conn: Connection, kind: str, local_id: int) -> list[TraceLine]:
    rows = s.execute(
        select(Event, Run.job)
        .outerjoin(Run, Run.id == Event.run_id)
        .where(Event.connection_id == conn.id, Event.kind == kind, Event.local_id == local_id)
        .order_by(Event.at, Event.id)
    )
    return [
        TraceLine(ev.at, f"{ev.field} changed", f"{ev.old} -> {ev.new}", ev.run_id, job)
        for ev, job in rows
    ]


def trace(store: Store, conn: Connection, kind: str, key: str) -> Trace:
    """``kind`` is product (by SKU), customer (by email) or invoice (by order number)."""
    with store.session() as s:
        if kind == "product":
            product = s.scalar(
                select(Product).where(Product.connection_id == conn.id, Product.sku == key)
            )
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
            customer = s.scalar(
                select(Customer).where(
                    Customer.connection_id == conn.id,
                    func.lower(func.trim(Customer.email)) == key.strip().lower(),
                )
            )
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
            order = s.scalar(
                select(Order).where(Order.connection_id == conn.id, Order.number == key)
            )
            if order is None:
                raise UsageError(f"no order numbered {key!r} in connection {conn.name!r}")
            job = s.scalar(select(InvoiceJob).where(InvoiceJob.order_id == order.id))
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
                    if job and job.state in ("pending", "failed")
                    else None,
                    "last_error": job.last_error if job else None,
                },
            )
            if job is not None:
                result.history.append(
                    TraceLine(job.created_at, "queued", f"key {job.idempotency_key}")
                )
                rows = s.execute(
                    select(InvoiceAttempt, Run.job)
                    .outerjoin(Run, Run.id == InvoiceAttempt.run_id)
                    .where(InvoiceAttempt.job_id == job.id)
                    .order_by(InvoiceAttempt.at, InvoiceAttempt.id)
                )
                for attempt, run_job in rows:
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
