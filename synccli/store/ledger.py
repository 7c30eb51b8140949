"""The persistent call ledger: every call, and what the provider said is left.

A cron run starts from what earlier runs spent, not from zero: before each call the ledger refuses
when the day's or month's budget is known to be spent (by the provider's 429, its headers, or our
own count against the connection's limits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from synccli import fmt
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
        name: str | None = None,
    ) -> None:
        # A dry run writes no shop data, but the calls it makes are made: the provider counts
        # them, so the ledger does too (and a budget the provider says is spent is stored).
        self.read_only = read_only
        self.name = name  # the connection's, for the hint a stored block gives
        self.store = store
        self.connection_id = connection_id
        self.limits = limits
        self.run_id = run_id
        self.reserve = reserve  # calls kept back for higher-priority jobs (invoices)
        # Calls not yet written (see ``deferred``), oldest first; counted by ``check`` as if
        # they were.
        self._pending: list[CallRecord] = []
        self._guard = threading.Lock()  # the pending list
        self._writing = threading.Lock()  # one writer at a time keeps budget updates in order
        self._defer = False
        self._read: Select[Any] | None = None  # see _budget_read

    def use_limits(self, limits: Limits) -> None:
        """The connection's own limits, once its connector knows them (X-Series: its window
        grows with the store's registers)."""
        self.limits, self._read = limits, None

    def window_left(self, now: datetime) -> tuple[float, datetime] | None:
        """What the provider last said was left of its short window (``window``, as Lightspeed
        X-Series' X-RateLimit-Remaining), and when, if within the window: a new run's pacer
        starts from it, so runs and hosts that follow each other share the window."""
        seconds = self.limits.window_seconds
        if not seconds:
            return None
        with self._guard:
            said = [c for c in self._pending if "window" in c.remaining]
        if said:
            return said[-1].remaining["window"], said[-1].at
        with self.store.reading() as conn:
            row = conn.execute(
                select(Budget.remaining, Budget.updated_at).where(
                    Budget.connection_id == self.connection_id
                )
            ).first()
        if row is None or not row.updated_at or "window" not in (row.remaining or {}):
            return None
        at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        if now - at >= timedelta(seconds=seconds):
            return None
        return float(row.remaining["window"]), at

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block, a call is recorded without waiting for the store's write lock.

        A pull fetches on one thread while another applies a batch of 1,000 records in one
        SQLite transaction (tens of milliseconds holding the database's single write lock); a
        call recorded meanwhile would hold the fetching up until that commit. Here it is kept in
        memory instead, counted by ``check`` all the same, and written ``WRITE_EVERY`` at a
        time when the lock is free, when ``MAX_DEFERRED`` are waiting (then it waits), or when
        the block ends (a transaction a call was a tenth of Lightspeed's 500-call pull).
        PostgreSQL locks rows, not the database: there every call is written at once. A process
        killed inside the block may leave up to ``MAX_DEFERRED`` calls unwritten; the
        provider's own counts (headers, 429s) still bound the budget."""
        self._defer = self.store.is_sqlite
        try:
            yield
        finally:
            self._defer = False
            self.flush()

    WRITE_EVERY = 10
    MAX_DEFERRED = 50

    def check(self, now: datetime, cost: float) -> None:
        with self._guard:
            pending = list(self._pending)
        said = [c for c in pending if "day" in c.remaining]
        day, month = day_start(now), month_start(now)
        with self.store.reading() as conn:
            budget = conn.execute(self._budget_read(), {"day": day, "month": month}).one()
        if budget.blocked_until and now < budget.blocked_until:
            lift = f"synccli connections unblock {self.name}" if self.name else ""
            why = budget.blocked_reason or "budget spent"
            raise BudgetExhausted(
                f"stored budget block until {fmt.minute(budget.blocked_until)}, set by the "
                f"provider's answer to an earlier call ({why}); no call was made"
                + (f". Once the provider allows calls again, `{lift}` lifts it" if lift else ""),
                reset_at=budget.blocked_until,
            )
        if self.limits.per_day:
            used = int(budget.day_used or 0) + sum(1 for c in pending if c.at >= day)
            left = self.limits.per_day - used
            remaining = (budget.remaining or {}).get("day")
            if said and said[-1].at >= day:
                left = min(left, int(said[-1].remaining["day"]))
            elif remaining is not None and budget.updated_at and budget.updated_at >= day:
                left = min(left, int(remaining))
            if left - self.reserve <= 0:
                raise BudgetExhausted(
                    f"the day's budget of {self.limits.per_day} calls is used up "
                    f"({used} made today, {self.reserve} reserved)",
                    reset_at=day + timedelta(days=1),
                )
        if self.limits.per_month:
            used = int(budget.month_used or 0) + sum(1 for c in pending if c.at >= month)
            if used + self.reserve >= self.limits.per_month:
                raise BudgetExhausted(
                    f"the month's budget of {self.limits.per_month} calls is used up",
                    reset_at=next_month(now),
                )

    def _budget_read(self) -> Select[Any]:
        """The budget row and the calls written today and this month (those kept back are
        counted by the caller), as one statement built once: it runs before every call, and
        building it anew cost as much as running it (a fifth of a Lightspeed pull's fetching)."""
        if self._read is None:
            budgets = Budget.__table__
            mine = budgets.c.connection_id == self.connection_id
            columns = [
                select(budgets.c[name]).where(mine).scalar_subquery().label(name)
                for name in ("blocked_until", "blocked_reason", "remaining", "updated_at")
            ]
            for scope, limit in (("day", self.limits.per_day), ("month", self.limits.per_month)):
                if limit:
                    written = (
                        select(func.count())
                        .select_from(ApiCall)
                        .where(
                            ApiCall.connection_id == self.connection_id,
                            ApiCall.at >= bindparam(scope),
                        )
                        .scalar_subquery()
                    )
                    columns.append(written.label(f"{scope}_used"))
            self._read = select(*columns)
        return self._read

    def record(self, call: CallRecord) -> None:
        """Write one call (with any kept back before it), and what the provider said is left."""
        with self._guard:
            self._pending.append(call)
            waiting = len(self._pending)
        if not self._defer:
            self._flush(wait=True)
        elif waiting >= self.WRITE_EVERY:
            self._flush(wait=waiting >= self.MAX_DEFERRED)

    def flush(self) -> None:
        """Write every call kept back, waiting for the store's write lock if need be."""
        self._flush(wait=True)

    def _flush(self, wait: bool) -> None:
        if not self._writing.acquire(blocking=wait):
            return  # the other thread is writing them
        try:
            with self._guard:
                batch = list(self._pending)
            if not batch:
                return
            try:
                self._write(batch, wait)
            except _LockBusy:
                return
            with self._guard:
                # only once committed: until then ``check`` counts them here (a call may be
                # counted twice for a moment, never missed)
                del self._pending[: len(batch)]
        finally:
            self._writing.release()

    def _write(self, batch: list[CallRecord], wait: bool) -> None:
        """One short transaction: plain statements rather than tracked objects (an ORM unit of
        work cost ~2 ms a call, on the thread that should be fetching)."""
        calls, budgets = ApiCall.__table__, Budget.__table__
        remaining: dict[str, float] = {}
        said_at: datetime | None = None
        for call in batch:
            if call.remaining:
                remaining.update(call.remaining)
                said_at = call.at
        with self.store.engine.connect() as conn:
            with _busy_timeout(conn, None if wait else 0, self.store.lock_timeout_ms):
                try:
                    transaction = conn.begin()  # SQLite: BEGIN IMMEDIATE takes the write lock
                except OperationalError as exc:
                    if not wait and "locked" in str(exc.orig):
                        raise _LockBusy from None
                    raise
            with transaction:
                conn.execute(
                    insert(calls),
                    [
                        {
                            "connection_id": self.connection_id,
                            "run_id": self.run_id,
                            "at": call.at,
                            "method": call.method,
                            "path": call.path[:500],
                            "status": call.status,
                            "ms": call.ms,
                            "cost": Decimal(str(call.cost)),
                        }
                        for call in batch
                    ],
                )
                if not remaining:
                    return
                where = budgets.c.connection_id == self.connection_id
                held_now = select(budgets.c.remaining).where(where).with_for_update()
                held = conn.execute(held_now).first()
                if held is None:
                    _insert_budget_row(conn, self.connection_id, said_at or batch[-1].at)
                    held = conn.execute(held_now).first()
                    assert held is not None  # inserted above, or by the host that raced us
                conn.execute(
                    update(budgets)
                    .where(where)
                    .values(remaining={**(held.remaining or {}), **remaining}, updated_at=said_at)
                )

    def exhausted(self, scope: str, reset_at: datetime, message: str) -> None:
        with self.store.session() as s:
            budget = _budget_row(s, self.connection_id, reset_at)
            budget.blocked_until = reset_at
            budget.blocked_reason = message
            budget.updated_at = datetime.now(UTC)


class _LockBusy(Exception):
    """Another connection holds SQLite's write lock, and the caller chose not to wait."""


@contextmanager
def _busy_timeout(conn: Connection, ms: int | None, configured: int) -> Iterator[None]:
    """SQLite: wait at most ``ms`` for a lock on ``conn`` within the block (None: as configured)."""
    if ms is None or conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA busy_timeout={int(ms)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={configured}")


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


def stored_block(store: Store, connection_id: int, now: datetime) -> tuple[datetime, str] | None:
    """(until, reason) of the budget block stored for ``connection_id``, while it lasts."""
    with store.session() as s:
        budget = s.get(Budget, connection_id)
        if budget is None or budget.blocked_until is None or budget.blocked_until <= now:
            return None
        return budget.blocked_until, budget.blocked_reason or "budget exhausted"


def lift_block(store: Store, connection_id: int) -> tuple[datetime, str] | None:
    """Remove the stored budget block; returns what it was (None: there was none)."""
    with store.session() as s:
        budget = s.get(Budget, connection_id)
        if budget is None or budget.blocked_until is None:
            return None
        was = (budget.blocked_until, budget.blocked_reason or "budget exhausted")
        budget.blocked_until = None
        budget.blocked_reason = None
        return was
