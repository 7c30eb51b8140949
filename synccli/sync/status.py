"""The status report a support engineer reads at a glance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from synccli.store.db import Store
from synccli.store.ledger import usage
from synccli.store.models import Connection, Cursor, InvoiceJob, Link, ReviewItem, Run
from synccli.store.runs import last_runs
from synccli.sync.products import STOCK_SWEEP


@dataclass
class JobStatus:
    job: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    calls: int
    counts: dict[str, Any]
    error: str | None


@dataclass
class ConnectionStatus:
    name: str
    provider: str
    needs_reauth: bool
    jobs: list[JobStatus] = field(default_factory=list)
    cursor_lag_minutes: dict[str, float | None] = field(default_factory=dict)
    calls: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    invoices: dict[str, int] = field(default_factory=dict)
    ghosts: int = 0
    review_waiting: int = 0


def status_report(
    store: Store, now: datetime, names: list[str] | None = None
) -> list[ConnectionStatus]:
    """Per connection: last run of each job, cursor lag, budget use, queue, ghosts, review items."""
    from synccli.sync.context import _limits_of, connector_module

    report = []
    with store.session() as s:
        conns = list(s.scalars(select(Connection).order_by(Connection.name)))
    for conn in conns:
        if names and conn.name not in names:
            continue
        item = ConnectionStatus(conn.name, conn.provider, conn.needs_reauth)
        for run in last_runs(store, conn.id):
            item.jobs.append(
                JobStatus(
                    run.job,
                    run.started_at,
                    run.ended_at,
                    run.outcome,
                    run.calls,
                    run.counts or {},
                    run.error,
                )
            )
        with store.session() as s:
            for cur in s.scalars(select(Cursor).where(Cursor.connection_id == conn.id)):
                if cur.stream == STOCK_SWEEP:  # a weekly mark, not a freshness cursor
                    continue
                item.cursor_lag_minutes[cur.stream] = (
                    round((now - cur.value).total_seconds() / 60, 1) if cur.value else None
                )
            for state, n in s.execute(
                select(InvoiceJob.state, func.count())
                .where(InvoiceJob.connection_id == conn.id)
                .group_by(InvoiceJob.state)
            ):
                item.invoices[state] = n
            item.ghosts = (
                s.scalar(
                    select(func.count())
                    .select_from(Link)
                    .where(Link.connection_id == conn.id, Link.state.in_(("ghost", "archived")))
                )
                or 0
            )
            item.review_waiting = (
                s.scalar(
                    select(func.count())
                    .select_from(ReviewItem)
                    .where(ReviewItem.connection_id == conn.id, ReviewItem.resolved_at.is_(None))
                )
                or 0
            )
        item.calls = usage(store, conn.id, now)
        try:
            limits = _limits_of(connector_module(conn.provider))
            item.limits = {k: v for k, v in vars(limits).items() if v is not None}
        except (ImportError, Exception):  # a provider without a connector yet
            item.limits = {}
        report.append(item)
    return report


def last_run_of(store: Store, connection_id: int, job: str) -> Run | None:
    with store.session() as s:
        return s.scalar(
            select(Run)
            .where(Run.connection_id == connection_id, Run.job == job)
            .order_by(Run.id.desc())
            .limit(1)
        )
