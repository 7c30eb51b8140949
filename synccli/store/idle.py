"""Which connections post-invoices has nothing to do for, in Core (no mapped class).

A cron run of ``post-invoices --all`` every few minutes mostly finds every queue empty. Opening
each connection's run (lease, run row: the ORM) and its connector (the provider's module and the
HTTP stack) only to find that out cost more than half a second a run. One query here says, for
every connection, whether a run could have anything to do; one with nothing is answered by
:func:`record_nothing_due` (all of them at once) and the rest run as before.

"Anything to do" errs towards running: a due job (the same rule as ``claim_next``: active, due
now, its claim absent or expired, which takes over a dead run's jobs), an order without a job
(``enqueue_missing`` queues it), an email to send again (``notify.flush_pending``'s rule), or a
lease row (a run in progress, or a dead one whose rows the next run closes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    Select,
    String,
    Text,
    column,
    exists,
    insert,
    or_,
    select,
    table,
)

from synccli.procs import owner_id
from synccli.store.db import Store

# the states a job is worked in (``store.claims.HELD_STATES``: a test keeps the two equal)
ACTIVE = ("pending", "posting", "paying", "failed", "waiting")
# ``notify.flush_pending``'s defaults (a test keeps them equal)
EMAIL_GRACE = timedelta(minutes=10)
EMAIL_MAX_AGE = timedelta(days=7)

_connections = table("connections", column("id", Integer), column("name", String))
_jobs = table(
    "invoice_jobs",
    column("id", Integer),
    column("connection_id", Integer),
    column("order_id", Integer),
    column("state", String),
    column("next_attempt_at", DateTime),
    column("claimed_until", DateTime),
)
_orders = table("orders", column("id", Integer), column("connection_id", Integer))
_notifications = table(
    "notifications",
    column("connection_id", Integer),
    column("sent_at", DateTime),
    column("created_at", DateTime),
    column("error", Text),
)
_leases = table("leases", column("job", String), column("connection_id", Integer))
_runs = table(
    "runs",
    column("id", Integer),
    column("job", String),
    column("connection_id", Integer),
    column("started_at", DateTime),
    column("ended_at", DateTime),
    column("outcome", String),
    column("counts", JSON),
    column("calls", Integer),
    column("error", Text),
    column("owner", String),
)


def _naive(when: datetime) -> datetime:
    """As the store keeps times: naive UTC."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def post_invoices_work(store: Store, job: str, now: datetime) -> list[tuple[int, str, bool]]:
    """Every connection (id, name), by name, and whether a post-invoices run could have
    anything to do for it at ``now``."""
    at = _naive(now)
    c = _connections.c
    j, o, n, le = _jobs.c, _orders.c, _notifications.c, _leases.c
    due = exists().where(
        j.connection_id == c.id,
        j.state.in_(ACTIVE),
        j.next_attempt_at <= at,
        or_(j.claimed_until.is_(None), j.claimed_until < at),
    )
    unqueued = exists().where(
        o.connection_id == c.id,
        ~exists().where(j.order_id == o.id, j.connection_id == o.connection_id),
    )
    emails = exists().where(
        n.connection_id == c.id,
        n.sent_at.is_(None),
        n.created_at >= at - EMAIL_MAX_AGE,
        or_(n.error.is_not(None), n.created_at < at - EMAIL_GRACE),
    )
    leased = exists().where(le.job == job, le.connection_id == c.id)
    work = or_(due, unqueued, emails, leased).label("work")
    query = select(c.id, c.name, work).order_by(c.name)
    with store.reading() as conn:
        return [(int(i), str(name), bool(w)) for i, name, w in conn.execute(query)]


def record_nothing_due(
    store: Store,
    job: str,
    counts: Mapping[int, dict[str, Any]],
    now: datetime,
    round_window: tuple[datetime, datetime] | None = None,
) -> dict[int, int]:
    """A finished run row (``ok``, no call) for each connection (by id, with its report's
    counts) a run found nothing to do for: ``status`` and the round rule read them as they read
    any run's. By connection id, the id of each row written.

    One write transaction and one insert for them all: a cron run over many idle connections
    took the write lock (and paid a commit) once a connection. With ``round_window`` (since,
    until), a connection whose ``job`` already ended well in it gets no row and is not in the
    answer: another host's run this round, ``job_run``'s round rule, checked under the same
    write lock (SQLite) as the rows are written."""
    at = _naive(now)
    owner = owner_id()
    with store.engine.begin() as conn:
        idle = list(counts)
        if round_window is not None and idle:
            done = set(conn.scalars(_ran_ok(job, *round_window)))
            idle = [i for i in idle if i not in done]
        if not idle:
            return {}
        rows = [
            {"job": job, "connection_id": i, "started_at": at, "ended_at": at}
            | {"outcome": "ok", "counts": counts[i], "calls": 0, "owner": owner}
            for i in idle
        ]
        # a connection has one row here: its id says which row each run id is (RETURNING's
        # order is not the rows')
        written = conn.execute(insert(_runs).returning(_runs.c.connection_id, _runs.c.id), rows)
        return {int(i): int(run_id) for i, run_id in written}


def _ran_ok(job: str, since: datetime, until: datetime) -> Select[int]:
    """The connections a run of ``job`` ended well for between the two times
    (``store.runs.ran_ok_between`` for every connection at once: one look-up of the runs'
    (connection, job) index a connection, whatever their number)."""
    c, r = _connections.c, _runs.c
    ended = exists().where(
        r.connection_id == c.id,
        r.job == job,
        r.outcome == "ok",
        r.ended_at >= _naive(since),
        r.ended_at <= _naive(until),
    )
    return select(c.id).where(ended)
