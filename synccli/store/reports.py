"""The reads behind ``status`` and ``trace``: a connection's cursors and counts, a record's links,
changes and attempts, each with the job of the run that made it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from synccli.store.db import Store
from synccli.store.models import (
    Cursor,
    Event,
    InvoiceAttempt,
    InvoiceJob,
    Link,
    Order,
    ReviewItem,
    Run,
)
from synccli.store.sync_state import UNCODED


# --- status --------------------------------------------------------------------------------------
def cursors_of(
    s: Session, connection_id: int, streams: Iterable[str]
) -> dict[str, datetime | None]:
    """stream -> cursor value, for those of ``streams`` the connection has moved."""
    rows = s.scalars(
        select(Cursor).where(Cursor.connection_id == connection_id, Cursor.stream.in_(streams))
    )
    return {cur.stream: cur.value for cur in rows}


def invoice_states(s: Session, connection_id: int) -> dict[str, int]:
    """state -> number of the connection's invoice jobs in it (states with none are absent)."""
    rows = s.execute(
        select(InvoiceJob.state, func.count())
        .where(InvoiceJob.connection_id == connection_id)
        .group_by(InvoiceJob.state)
    )
    return {state: n for state, n in rows.tuples()}


def refund_states(s: Session, connection_id: int) -> dict[str, int]:
    """state -> number of the connection's refund jobs in it (the refunds among
    :func:`invoice_states`)."""
    rows = s.execute(
        select(InvoiceJob.state, func.count())
        .join(Order, InvoiceJob.order_id == Order.id)
        .where(InvoiceJob.connection_id == connection_id, Order.refund_of.is_not(None))
        .group_by(InvoiceJob.state)
    )
    return {state: n for state, n in rows.tuples()}


def count_ghosts(s: Session, connection_id: int) -> int:
    """Links whose remote record is gone or archived."""
    count = s.scalar(
        select(func.count())
        .select_from(Link)
        .where(Link.connection_id == connection_id, Link.state.in_(("ghost", "archived")))
    )
    return count or 0


def count_review_waiting(s: Session, connection_id: int) -> int:
    """Unresolved review items, those of uncoded remote products apart (counted on their own)."""
    count = s.scalar(
        select(func.count())
        .select_from(ReviewItem)
        .where(
            ReviewItem.connection_id == connection_id,
            ReviewItem.resolved_at.is_(None),
            ReviewItem.kind != UNCODED,
        )
    )
    return count or 0


def last_ok_end(store: Store, connection_id: int, job: str) -> datetime | None:
    """When the last successful run of ``job`` ended (None: never)."""
    with store.session() as s:
        return s.scalar(
            select(func.max(Run.ended_at)).where(
                Run.connection_id == connection_id, Run.job == job, Run.outcome == "ok"
            )
        )


# --- trace ---------------------------------------------------------------------------------------
def links_of(s: Session, connection_id: int, kind: str, local_id: int) -> list[Link]:
    return list(
        s.scalars(
            select(Link).where(
                Link.connection_id == connection_id, Link.kind == kind, Link.local_id == local_id
            )
        )
    )


def events_of(
    s: Session, connection_id: int, kind: str, local_id: int
) -> list[tuple[Event, str | None]]:
    """A record's changes, oldest first, each with the job of the run that made it."""
    rows = s.execute(
        select(Event, Run.job)
        .outerjoin(Run, Run.id == Event.run_id)
        .where(Event.connection_id == connection_id, Event.kind == kind, Event.local_id == local_id)
        .order_by(Event.at, Event.id)
    )
    return [(event, job) for event, job in rows.tuples()]


def order_by_number(s: Session, connection_id: int, number: str) -> Order | None:
    return s.scalar(
        select(Order).where(Order.connection_id == connection_id, Order.number == number)
    )


def job_of_order(s: Session, order_id: int) -> InvoiceJob | None:
    return s.scalar(select(InvoiceJob).where(InvoiceJob.order_id == order_id))


def attempts_with_jobs(s: Session, job_id: int) -> list[tuple[InvoiceAttempt, str | None]]:
    """An invoice job's attempts, oldest first, each with the job of the run that made it."""
    rows = s.execute(
        select(InvoiceAttempt, Run.job)
        .outerjoin(Run, Run.id == InvoiceAttempt.run_id)
        .where(InvoiceAttempt.job_id == job_id)
        .order_by(InvoiceAttempt.at, InvoiceAttempt.id)
    )
    return [(attempt, job) for attempt, job in rows.tuples()]
