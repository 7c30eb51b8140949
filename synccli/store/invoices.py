"""Invoice jobs and the orders behind them: which jobs are due, claiming one, queueing the orders
that have none, what a plan reads (the order, its linked products), and the operator's views.

The due rule is written once (:func:`_due`): the claim a run takes and the list a dry run shows
read the same jobs in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, selectinload

from synccli.store.bulk import chunks
from synccli.store.claims import HELD_STATES
from synccli.store.db import Store
from synccli.store.models import (
    Connection,
    InvoiceAttempt,
    InvoiceJob,
    Link,
    Order,
    OrderPayment,
    Product,
)

ACTIVE = HELD_STATES  # the states a job is worked in: due again at its next_attempt_at


def _due(connection_id: int, now: datetime) -> tuple[Any, ...]:
    """A job a run takes now: active, due, and not claimed by a run still holding it."""
    return (
        InvoiceJob.connection_id == connection_id,
        InvoiceJob.state.in_(ACTIVE),
        InvoiceJob.next_attempt_at <= now,
        (InvoiceJob.claimed_until.is_(None)) | (InvoiceJob.claimed_until < now),
    )


_DUE_ORDER = (InvoiceJob.next_attempt_at, InvoiceJob.id)


# The passes of a run (``claim_next``'s ``part``): the payments waiting on posted invoices, the
# rest (invoices to post, refunds, payments refused and due again), then the payments again.
INVOICES, PAYMENTS = "invoices", "payments"


def _part(part: str | None, now: datetime) -> tuple[Any, ...]:
    if part == INVOICES:
        return (InvoiceJob.state != "paying",)
    if part == PAYMENTS:
        return (
            InvoiceJob.state == "paying",
            (InvoiceJob.claimed_until.is_(None)) | (InvoiceJob.claimed_until < now),
        )
    return ()


def claim_next(
    store: Store,
    connection_id: int,
    worker: str,
    now: datetime,
    ttl: timedelta,
    seen: set[int],
    part: str | None = None,
) -> int | None:
    """Claim the next due job for ``worker`` until ``now + ttl`` (committed), or None when
    nothing is due. ``seen``: jobs this run had already (not taken twice in one run).
    ``part``: only the jobs of one pass of the run (:data:`INVOICES`, or :data:`PAYMENTS`, due
    or not: their batch goes now)."""
    if part == PAYMENTS:
        where = (InvoiceJob.connection_id == connection_id, *_part(part, now))
    else:
        where = (*_due(connection_id, now), *_part(part, now))
    query = select(InvoiceJob.id).where(*where).order_by(*_DUE_ORDER).limit(1)
    if seen:
        query = query.where(InvoiceJob.id.not_in(seen))
    if not store.is_sqlite:  # SQLite: the store's write lock already serialises the claims
        query = query.with_for_update(skip_locked=True)
    with store.locked() as s:
        job_id = s.scalar(query)
        if job_id is None:
            return None
        s.execute(
            update(InvoiceJob)
            .where(InvoiceJob.id == job_id)
            .values(claimed_by=worker, claimed_until=now + ttl)
        )
    return job_id


def due_jobs(
    s: Session, connection_id: int, now: datetime, part: str | None = None
) -> list[tuple[InvoiceJob, Order]]:
    """The jobs :func:`claim_next` would hand out now (for ``part``), in its order, each with
    its order and lines (nothing claimed)."""
    if part == PAYMENTS:
        where = (InvoiceJob.connection_id == connection_id, *_part(part, now))
    else:
        where = (*_due(connection_id, now), *_part(part, now))
    rows = s.execute(
        select(InvoiceJob, Order)
        .join(Order, InvoiceJob.order_id == Order.id)
        .options(selectinload(Order.lines), selectinload(Order.payments))
        .where(*where)
        .order_by(*_DUE_ORDER)
    )
    return [(job, order) for job, order in rows.tuples()]


def _without_job(connection_id: int) -> Select[Any]:
    return (
        select(Order)
        .outerjoin(
            InvoiceJob,
            (InvoiceJob.order_id == Order.id) & (InvoiceJob.connection_id == Order.connection_id),
        )
        .where(Order.connection_id == connection_id, InvoiceJob.id.is_(None))
        .order_by(Order.id)
    )


def orders_without_job(s: Session, connection_id: int) -> list[Order]:
    """Orders the shop inserted straight into its tables (no invoice job yet), oldest first,
    with their lines."""
    return list(
        s.scalars(
            _without_job(connection_id).options(
                selectinload(Order.lines), selectinload(Order.payments)
            )
        )
    )


def order_keys_without_job(s: Session, connection_id: int) -> list[tuple[int, str]]:
    """(id, number) of :func:`orders_without_job`, without loading the orders."""
    query = _without_job(connection_id).with_only_columns(Order.id, Order.number)
    return [(order_id, number) for order_id, number in s.execute(query).tuples()]


def insert_jobs(s: Session, rows: list[dict[str, Any]]) -> int:
    """Insert invoice jobs, skipping any whose order has one already (another runner queued it
    meanwhile: the unique keys decide). Returns how many were inserted."""
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    added = 0
    for chunk in chunks(rows):
        statement = (
            insert(InvoiceJob).values(chunk).on_conflict_do_nothing().returning(InvoiceJob.id)
        )
        added += len(s.execute(statement).all())
    return added


def job_with_order(s: Session, job_id: int) -> tuple[InvoiceJob, Order]:
    """A job and its order with lines (both exist: the job was just claimed)."""
    job = s.get(InvoiceJob, job_id)
    assert job is not None
    order = s.scalar(
        select(Order)
        .options(selectinload(Order.lines), selectinload(Order.payments))
        .where(Order.id == job.order_id)
    )
    assert order is not None
    return job, order


@dataclass
class Waiting:
    """The connection's posted invoices whose payments wait to be applied (``paying``, no live
    claim): how many, how many payments, when the oldest was posted, and when the first is due
    (its wait over, or sooner: a payment whose answer was lost is looked up next run)."""

    invoices: int
    payments: int
    oldest: datetime | None
    first_due: datetime | None


def waiting_payments(s: Session, connection_id: int, now: datetime) -> Waiting:
    unapplied = (OrderPayment.state.is_(None)) | (OrderPayment.state != "posted")
    jobs, payments, oldest, first_due = s.execute(
        select(
            func.count(InvoiceJob.id.distinct()),
            func.count(OrderPayment.id),
            func.min(InvoiceJob.posted_at),
            func.min(InvoiceJob.next_attempt_at),
        )
        .select_from(InvoiceJob)
        .outerjoin(OrderPayment, (OrderPayment.order_id == InvoiceJob.order_id) & unapplied)
        .where(InvoiceJob.connection_id == connection_id, *_part(PAYMENTS, now))
    ).one()
    return Waiting(int(jobs or 0), int(payments or 0), oldest, first_due)


def refund_awaits_payments(s: Session, connection_id: int, now: datetime) -> bool:
    """Whether a due refund's order has its invoice posted and its payments still waiting."""
    original = aliased(Order)
    original_job = aliased(InvoiceJob)
    query = (
        select(InvoiceJob.id)
        .join(Order, InvoiceJob.order_id == Order.id)
        .join(
            original,
            (original.connection_id == Order.connection_id) & (original.number == Order.refund_of),
        )
        .join(
            original_job,
            (original_job.order_id == original.id)
            & (original_job.connection_id == original.connection_id),
        )
        .where(*_due(connection_id, now), original_job.state == "paying")
        .limit(1)
    )
    return s.scalar(query) is not None


def unapplied_payments(s: Session, order_id: int) -> list[OrderPayment]:
    """The order's payments not yet ``posted`` at the provider, in payment order."""
    return list(
        s.scalars(
            select(OrderPayment)
            .where(
                OrderPayment.order_id == order_id,
                (OrderPayment.state.is_(None)) | (OrderPayment.state != "posted"),
            )
            .order_by(OrderPayment.payment_no)
        )
    )


def payments_of(s: Session, order_id: int) -> list[OrderPayment]:
    """Every payment of the order, in payment order."""
    return list(
        s.scalars(
            select(OrderPayment)
            .where(OrderPayment.order_id == order_id)
            .order_by(OrderPayment.payment_no)
        )
    )


def payment_rows(s: Session, order_id: int, ids: Iterable[int]) -> list[OrderPayment]:
    """These payments of the order (for a state write under the job's lock)."""
    return list(
        s.scalars(
            select(OrderPayment).where(
                OrderPayment.order_id == order_id, OrderPayment.id.in_(list(ids))
            )
        )
    )


def payment_states(s: Session, connection_id: int) -> dict[tuple[str | None, str | None], int]:
    """(payment state, its invoice job's state) -> number of the connection's order payments."""
    rows = s.execute(
        select(OrderPayment.state, InvoiceJob.state, func.count())
        .join(Order, OrderPayment.order_id == Order.id)
        .outerjoin(
            InvoiceJob,
            (InvoiceJob.order_id == Order.id) & (InvoiceJob.connection_id == Order.connection_id),
        )
        .where(Order.connection_id == connection_id)
        .group_by(OrderPayment.state, InvoiceJob.state)
    )
    return {(pay, job): n for pay, job, n in rows.tuples()}


def refused_payments(s: Session, connection_id: int, limit: int) -> list[tuple[str, OrderPayment]]:
    """(order number, payment) of the connection's payments the provider refused, oldest order
    first, at most ``limit``."""
    rows = s.execute(
        select(Order.number, OrderPayment)
        .join(Order, OrderPayment.order_id == Order.id)
        .where(Order.connection_id == connection_id, OrderPayment.state == "refused")
        .order_by(Order.id, OrderPayment.payment_no)
        .limit(limit)
    )
    return [(number, payment) for number, payment in rows.tuples()]


def linked_products(
    s: Session, connection_id: int, skus: Iterable[str]
) -> dict[str, tuple[str, str | None]]:
    """sku -> (remote id, remote code) of the local products with these SKUs that are linked to
    a provider's product (a ghost link, whose remote record is gone, does not count)."""
    found: dict[str, tuple[str, str | None]] = {}
    for chunk in chunks(sorted(set(skus))):
        rows = s.execute(
            select(Product.sku, Link.remote_id, Link.remote_code)
            .join(
                Link,
                (Link.local_id == Product.id)
                & (Link.kind == "product")
                & (Link.connection_id == connection_id),
            )
            .where(
                Product.connection_id == connection_id,
                Product.sku.in_(chunk),
                Link.state != "ghost",
            )
        )
        found.update((sku, (remote_id, code)) for sku, remote_id, code in rows.tuples())
    return found


# --- the operator's views -------------------------------------------------------------------------
def connection_names(s: Session, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are connections."""
    return set(s.scalars(select(Connection.name).where(Connection.name.in_(list(names)))))


def job_rows(
    s: Session, connections: list[str] | None, state: str | None, limit: int | None
) -> list[tuple[InvoiceJob, Order, str]]:
    """(job, order, connection name), by connection and job id."""
    query = (
        select(InvoiceJob, Order, Connection.name)
        .join(Order, InvoiceJob.order_id == Order.id)
        .join(Connection, InvoiceJob.connection_id == Connection.id)
        .order_by(Connection.name, InvoiceJob.id)
    )
    if connections:
        query = query.where(Connection.name.in_(connections))
    if state:
        query = query.where(InvoiceJob.state == state)
    if limit:
        query = query.limit(limit)
    return [(job, order, name) for job, order, name in s.execute(query).tuples()]


def jobs_of_number(
    s: Session, number: str, connection: str | None
) -> list[tuple[InvoiceJob, Order, str]]:
    """(job, order, connection name) of the orders numbered ``number`` (in ``connection``)."""
    query = (
        select(InvoiceJob, Order, Connection.name)
        .join(Order, InvoiceJob.order_id == Order.id)
        .join(Connection, InvoiceJob.connection_id == Connection.id)
        .where(Order.number == number)
    )
    if connection:
        query = query.where(Connection.name == connection)
    return [(job, order, name) for job, order, name in s.execute(query).tuples()]


def order_number_exists(s: Session, number: str, connection: str | None = None) -> bool:
    """Whether an order numbered ``number`` is in the store (in ``connection``, when named)."""
    query = select(func.count()).select_from(Order).where(Order.number == number)
    if connection:
        query = query.join(Connection, Order.connection_id == Connection.id).where(
            Connection.name == connection
        )
    return bool(s.scalar(query))


def attempts_of(s: Session, job_id: int) -> list[InvoiceAttempt]:
    return list(
        s.scalars(
            select(InvoiceAttempt)
            .where(InvoiceAttempt.job_id == job_id)
            .order_by(InvoiceAttempt.id)
        )
    )


def order_job(
    s: Session, connection_id: int, number: str
) -> tuple[str, str | None, dict[str, Any] | None] | None:
    """(state, remote id, remote detail) of the invoice job of the connection's order
    ``number``, or None when it has none (or there is no such order)."""
    row = s.execute(
        select(InvoiceJob.state, InvoiceJob.remote_id, InvoiceJob.remote_detail)
        .join(Order, InvoiceJob.order_id == Order.id)
        .where(InvoiceJob.connection_id == connection_id, Order.number == number)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


def due_as_recorded(s: Session, connection_id: int, number: str) -> Decimal | None:
    """What the connection's posted invoice of order ``number`` has left to pay as our own
    records have it: its total at the provider less the payments we applied to it. None when
    they cannot tell: not posted by us with a known total, or a payment of the order not
    applied by us. (A part-paid invoice with earlier refunds: the caller reads it instead.)"""
    row = s.execute(
        select(InvoiceJob.state, InvoiceJob.remote_total, Order.id)
        .join(Order, InvoiceJob.order_id == Order.id)
        .where(InvoiceJob.connection_id == connection_id, Order.number == number)
    ).first()
    if row is None or row[0] != "posted" or row[1] is None:
        return None
    payments = payments_of(s, row[2])
    if any(p.state != "posted" for p in payments):
        return None
    paid = sum((Decimal(p.amount) for p in payments), Decimal(0))
    return max(Decimal(row[1]) - paid, Decimal(0))


def refund_remote_ids(s: Session, connection_id: int, of: str, besides: str) -> frozenset[str]:
    """The provider's ids recorded for the connection's refunds of order ``of`` other than
    refund ``besides``."""
    rows = s.scalars(
        select(InvoiceJob.remote_id)
        .join(Order, InvoiceJob.order_id == Order.id)
        .where(
            InvoiceJob.connection_id == connection_id,
            Order.refund_of == of,
            Order.number != besides,
            InvoiceJob.remote_id.is_not(None),
        )
    ).all()
    return frozenset(str(r) for r in rows if r)
