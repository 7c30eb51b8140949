"""Which connections post-invoices has nothing to do for, through the driver alone (no
SQLAlchemy: ``store.quick``).

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
from datetime import datetime, timedelta
from typing import Any

from synccli.procs import owner_id
from synccli.store.quick import QuickStore

# the states a job is worked in (``store.claims.HELD_STATES``: a test keeps the two equal)
ACTIVE = ("pending", "posting", "paying", "failed", "waiting")
# ``notify.flush_pending``'s defaults (a test keeps them equal)
EMAIL_GRACE = timedelta(minutes=10)
EMAIL_MAX_AGE = timedelta(days=7)
# rows a statement inserts at most: SQLite allows 32,766 parameters a statement
_BATCH = 1000

_WORK = f"""
SELECT c.id, c.name, (
    EXISTS (
        SELECT 1 FROM invoice_jobs j
        WHERE j.connection_id = c.id AND j.state IN ({", ".join("?" * len(ACTIVE))})
        AND j.next_attempt_at <= ? AND (j.claimed_until IS NULL OR j.claimed_until < ?)
    )
    OR EXISTS (
        SELECT 1 FROM orders o
        WHERE o.connection_id = c.id AND NOT EXISTS (
            SELECT 1 FROM invoice_jobs j
            WHERE j.order_id = o.id AND j.connection_id = o.connection_id
        )
    )
    OR EXISTS (
        SELECT 1 FROM notifications n
        WHERE n.connection_id = c.id AND n.sent_at IS NULL AND n.created_at >= ?
        AND (n.error IS NOT NULL OR n.created_at < ?)
    )
    OR EXISTS (SELECT 1 FROM leases l WHERE l.job = ? AND l.connection_id = c.id)
) AS work
FROM connections c ORDER BY c.name
"""
# ``store.runs.ran_ok_between`` for every connection at once: one look-up of the runs'
# (connection, job) index a connection, whatever their number
_RAN_OK = """
SELECT c.id FROM connections c WHERE EXISTS (
    SELECT 1 FROM runs r
    WHERE r.connection_id = c.id AND r.job = ? AND r.outcome = 'ok'
    AND r.ended_at >= ? AND r.ended_at <= ?
)
"""
_RUN_COLUMNS = "job, connection_id, started_at, ended_at, outcome, counts, calls, owner"


def post_invoices_work(store: QuickStore, job: str, now: datetime) -> list[tuple[int, str, bool]]:
    """Every connection (id, name), by name, and whether a post-invoices run could have
    anything to do for it at ``now``."""
    at = store.time(now)
    emails_since, grace_until = store.time(now - EMAIL_MAX_AGE), store.time(now - EMAIL_GRACE)
    params = (*ACTIVE, at, at, emails_since, grace_until, job)
    return [(int(i), str(name), bool(w)) for i, name, w in store.rows(_WORK, params)]


def record_nothing_due(
    store: QuickStore,
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
    at = store.time(now)
    owner = owner_id()
    written: dict[int, int] = {}
    with store.writing():
        idle = list(counts)
        if round_window is not None and idle:
            since, until = (store.time(t) for t in round_window)
            done = {int(i) for (i,) in store.rows(_RAN_OK, (job, since, until))}
            idle = [i for i in idle if i not in done]
        for start in range(0, len(idle), _BATCH):
            batch = idle[start : start + _BATCH]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch))
            params = [
                value
                for i in batch
                for value in (job, i, at, at, "ok", store.json(counts[i]), 0, owner)
            ]
            # a connection has one row here: its id says which row each run id is (RETURNING's
            # order is not the rows')
            sql = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES {values} RETURNING connection_id, id"
            written |= {int(i): int(run_id) for i, run_id in store.rows(sql, params)}
    return written
