"""The status report a support engineer reads at a glance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from synccli.errors import UsageError
from synccli.store.connections import list_connections
from synccli.store.db import Store
from synccli.store.invoices import payment_states, refused_payments
from synccli.store.ledger import usage
from synccli.store.reports import (
    count_ghosts,
    count_review_waiting,
    cursors_of,
    invoice_states,
    last_ok_end,
    refund_states,
)
from synccli.store.runs import holds_lease, last_runs
from synccli.store.sync_state import count_uncoded
from synccli.sync.customers import STREAM as CUSTOMER_STREAM
from synccli.sync.invoices import STATES as INVOICE_STATES
from synccli.sync.jobs import Job
from synccli.sync.payments import payment_totals

# Every connection reports the same cursors, whichever its provider has moved yet: a script
# reads one shape (None: never pulled).
CURSOR_STREAMS = ("products", "stock", CUSTOMER_STREAM)
PULL_JOB = Job.PULL_PRODUCTS
REFUSED_SHOWN = 20  # refused payments listed one by one (the count has them all)


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
    reauth_reason: str | None = None
    jobs: list[JobStatus] = field(default_factory=list)
    # When the last successful pull ended (None: never), and each stream's cursor: how fresh the
    # local copy is, in terms a merchant asks about.
    last_successful_pull: datetime | None = None
    # ``{"version": N}`` where the provider's cursors are versions (capabilities.version_stamps)
    cursors: dict[str, datetime | dict[str, int] | None] = field(default_factory=dict)
    calls: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    invoices: dict[str, int] = field(default_factory=dict)
    # the refunds among ``invoices``, by state (``waiting``: for their order to be posted)
    refunds: dict[str, int] = field(default_factory=dict)
    # the orders' payments: posted / pending / refused (sync/payments.py, for every provider)
    payments: dict[str, int] = field(default_factory=dict)
    # each refused payment (the first REFUSED_SHOWN): order number, payment, amount, method, why
    refused_payments: list[dict[str, Any]] = field(default_factory=list)
    ghosts: int = 0
    review_waiting: int = 0
    # remote products with no code in the field that holds the shop's SKU: read, never synced
    uncoded: int = 0
    # per stream, once the connection has had a webhook delivery: push (polled only every
    # safety_poll) or poll (deliveries silent), with when it was last delivered and polled
    push: dict[str, dict[str, Any]] = field(default_factory=dict)


def status_report(
    store: Store, now: datetime, names: list[str] | None = None
) -> list[ConnectionStatus]:
    """Per connection: last run of each job, the last successful pull and the cursors, budget
    use, the invoice queue (every state, zero when empty), ghosts and review items. An unknown
    name in ``names`` is a usage error."""
    from synccli.sync.context import limits_of, shown_stamp

    report = []
    conns = list_connections(store)
    missing = [n for n in names or [] if n not in {c.name for c in conns}]
    if missing:
        raise UsageError(f"no connection named {missing[0]!r} (see `synccli connections list`)")
    for conn in conns:
        if names and conn.name not in names:
            continue
        item = ConnectionStatus(conn.name, conn.provider, conn.needs_reauth, conn.reauth_reason)
        item.last_successful_pull = last_ok_end(store, conn.id, PULL_JOB)
        for run in last_runs(store, conn.id):
            outcome, error = run.outcome, run.error
            if run.ended_at is None and not holds_lease(store, run, now):
                # Its process died (kill -9, a crash) and its lease has lapsed: the row is
                # closed as `died` when the job's lease is next taken; say so already.
                outcome = "died"
                error = error or "its process ended without closing the run (lease expired)"
            item.jobs.append(
                JobStatus(
                    run.job,
                    run.started_at,
                    run.ended_at,
                    outcome,
                    run.calls,
                    run.counts or {},
                    error,
                )
            )
        with store.session() as s:
            stored = cursors_of(s, conn.id, CURSOR_STREAMS)
            item.cursors = {k: shown_stamp(conn.provider, stored.get(k)) for k in CURSOR_STREAMS}
            item.invoices = {**dict.fromkeys(INVOICE_STATES, 0), **invoice_states(s, conn.id)}
            item.refunds = refund_states(s, conn.id)
            item.payments = payment_totals(conn.provider, payment_states(s, conn.id))
            item.refused_payments = [
                {
                    "number": number,
                    "payment": p.payment_no,
                    "amount": f"{Decimal(p.amount):.2f}",
                    "method": p.method,
                    "state": "refused",
                    "error": p.error,
                }
                for number, p in refused_payments(s, conn.id, REFUSED_SHOWN)
            ]
            item.ghosts = count_ghosts(s, conn.id)
            item.review_waiting = count_review_waiting(s, conn.id)
            item.uncoded = count_uncoded(s, conn.id)
            item.push = push_modes(s, conn, now)
        item.calls = usage(store, conn.id, now)
        try:
            limits = limits_of(conn.provider)
            item.limits = {k: v for k, v in vars(limits).items() if v is not None}
        except (ImportError, Exception):  # a provider without a connector yet
            item.limits = {}
        report.append(item)
    return report


def push_modes(s: Any, conn: Any, now: datetime) -> dict[str, dict[str, Any]]:
    """Each stream's cadence (sync/push.py), for a connection that has had deliveries."""
    from synccli.store.webhooks import last_delivery_at
    from synccli.sync.cadence import modes

    return modes(s, conn, now) if last_delivery_at(s, conn.id) is not None else {}
