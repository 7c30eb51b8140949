"""The persistent call ledger: every call, and what the provider said is left.

A cron run starts from what earlier runs spent, not from zero: before each call the ledger refuses
when the day's or month's budget is known to be spent (by the provider's 429, its headers, or our
own count against the connection's limits).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from synccli.connectors.base import Limits
from synccli.connectors.http import CallRecord
from synccli.errors import BudgetExhausted
from synccli.store.db import Store
from synccli.store.models import ApiCall, Budget


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


class StoreLedger:
    """Implements the HTTP layer's Ledger over the ``api_calls`` and ``budgets`` tables."""

    def __init__(
        self,
        store: Store,
        connection_id: int,
        limits: Limits,
        run_id: int | None = None,
        reserve: int = 0,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only  # a dry run checks the budget but writes nothing
        self.store = store
        self.connection_id = connection_id
        self.limits = limits
        self.run_id = run_id
        self.reserve = reserve  # calls kept back for higher-priority jobs (invoices)

    def check(self, now: datetime, cost: float) -> None:
        budgets = Budget.__table__
        with self.store.reading() as s:
            budget = s.execute(
                select(
                    budgets.c.blocked_until,
                    budgets.c.blocked_reason,
                    budgets.c.remaining,
                    budgets.c.updated_at,
                ).where(budgets.c.connection_id == self.connection_id)
            ).first()
            if budget and budget.blocked_until and now < budget.blocked_until:
                raise BudgetExhausted(
                    budget.blocked_reason or "API budget exhausted", reset_at=budget.blocked_until
                )
            if self.limits.per_day:
                used = self._count(s, day_start(now))
                left = self.limits.per_day - used
                remaining = (budget.remaining or {}).get("day") if budget else None
                if remaining is not None and budget and budget.updated_at >= day_start(now):
                    left = min(left, int(remaining))
                if left - self.reserve <= 0:
                    raise BudgetExhausted(
                        f"the day's budget of {self.limits.per_day} calls is used up "
                        f"({used} made today, {self.reserve} reserved)",
                        reset_at=day_start(now) + timedelta(days=1),
                    )
            if self.limits.per_month:
                used = self._count(s, month_start(now))
                if used + self.reserve >= self.limits.per_month:
                    raise BudgetExhausted(
                        f"the month's budget of {self.limits.per_month} calls is used up",
                        reset_at=next_month(now),
                    )

    def _count(self, s: Session, since: datetime) -> int:
        return int(
            s.scalar(
                select(func.count())
                .select_from(ApiCall)
                .where(ApiCall.connection_id == self.connection_id, ApiCall.at >= since)
            )
            or 0
        )

    def record(self, call: CallRecord) -> None:
        """Write one call, and what the provider said is left, in one short transaction.

        Plain statements rather than tracked objects: a pull records hundreds of calls, from a
        thread that must get back to fetching (an ORM unit of work cost ~2 ms a call)."""
        if self.read_only:
            return
        calls, budgets = ApiCall.__table__, Budget.__table__
        with self.store.engine.begin() as conn:
            conn.execute(
                insert(calls).values(
                    connection_id=self.connection_id,
                    run_id=self.run_id,
                    at=call.at,
                    method=call.method,
                    path=call.path[:500],
                    status=call.status,
                    ms=call.ms,
                    cost=Decimal(str(call.cost)),
                )
            )
            if not call.remaining:
                return
            where = budgets.c.connection_id == self.connection_id
            held = conn.execute(select(budgets.c.remaining).where(where).with_for_update()).first()
            if held is None:
                _insert_budget_row(conn, self.connection_id, call.at)
                held = conn.execute(
                    select(budgets.c.remaining).where(where).with_for_update()
                ).first()
            conn.execute(
                update(budgets)
                .where(where)
                .values(remaining={**(held.remaining or {}), **call.remaining}, updated_at=call.at)
            )

    def exhausted(self, scope: str, reset_at: datetime, message: str) -> None:
        if self.read_only:
            return
        with self.store.session() as s:
            budget = _budget_row(s, self.connection_id, reset_at)
            budget.blocked_until = reset_at
            budget.blocked_reason = message
            budget.updated_at = datetime.now(UTC)


def _insert_budget_row(conn: Connection | Session, connection_id: int, at: datetime) -> None:
    """Create the connection's budget row unless it exists. Two hosts' first calls may race to
    create it: insert-or-ignore, then the caller reads it back locked."""
    dialect = conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect
    insert_ = pg_insert if dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        insert_(Budget.__table__)
        .values(connection_id=connection_id, remaining={}, updated_at=at)
        .on_conflict_do_nothing()
    )


def _budget_row(s: Session, connection_id: int, at: datetime) -> Budget:
    """The connection's budget row, created if missing, read back locked."""
    _insert_budget_row(s, connection_id, at)
    budget = s.get(Budget, connection_id, with_for_update=True, populate_existing=True)
    assert budget is not None
    return budget


def usage(store: Store, connection_id: int, now: datetime) -> dict[str, object]:
    """Calls made today and this month, and what the provider last said is left."""
    with store.session() as s:
        q = select(func.count()).select_from(ApiCall).where(ApiCall.connection_id == connection_id)
        today = s.scalar(q.where(ApiCall.at >= day_start(now))) or 0
        month = s.scalar(q.where(ApiCall.at >= month_start(now))) or 0
        budget = s.get(Budget, connection_id)
        return {
            "today": int(today),
            "month": int(month),
            "provider_says": dict(budget.remaining) if budget and budget.remaining else {},
            "blocked_until": budget.blocked_until.isoformat()
            if budget and budget.blocked_until and budget.blocked_until > now
            else None,
        }
