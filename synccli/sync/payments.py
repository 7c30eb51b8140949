"""Payments applied to posted invoices, exactly once (a provider whose
``capabilities.documents.payments`` is ``"applied"``: Xero's PUT /Payments).

A job whose invoice the provider has and whose order carries payments not yet applied is in
state ``paying``. Its payments wait to go in one call with others (the connection's
``payments_wait_hours``, Xero's default 24): a run applies every waiting payment, in calls of
:data:`BATCH`, once the oldest has waited that long, a full call's worth is waiting, or a due
refund's order is among them (:func:`released`); it does so before its other jobs (a refund
then finds its invoice paid) and again after them (the payments its invoices added, if the rule
holds then). A card payment reaches the bank in the processor's daily payout, which is what the
merchant reconciles, so a payment applied within the day is reconciled the same; and Xero
takes no payment with a new invoice (``Invoice.Payments`` is read-only), so each payment is a
write of its own, the call the wait shares. Per payment (``order_payments.state``):

1. **Look up first**: a payment left ``posting`` (an earlier call got no clear answer, or its run
   died) is looked for among the invoice's payments at the provider, by its reference, which is
   unique to the order and payment (:func:`reference`). Found -> ``posted``; only a payment the
   look-up did not find is sent again.
2. **Claim, then call**: the payments to send are marked ``posting`` in one transaction that
   re-asserts the job's claim, then sent in one call for the whole batch (every write fenced by
   the claims, as invoices are), and each answer is committed as it is read.
3. **Outcome**: every payment ``posted`` -> the job is ``posted``. A payment the provider refused
   (``refused``, with its message) makes the job ``failed`` like a refused invoice: the merchant
   is emailed what to fix, it is retried on the retry schedule and given up after
   ``give_up_after``; the invoice itself is never sent again. A call that failed as a whole
   (transient, budget, authorisation) leaves each job as a failed invoice post would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from synccli import registry
from synccli.clock import utc
from synccli.connectors.base import AppliedPayment, PaymentToApply
from synccli.errors import ClaimLost, ConfigError, Rejected, TransientError
from synccli.store.invoices import refund_awaits_payments, unapplied_payments, waiting_payments

if TYPE_CHECKING:
    from synccli.sync.context import JobContext
    from synccli.sync.invoices import _Worker

log = logging.getLogger("synccli.job")

BATCH = 50  # payments per call (connectors/xero_payments.PAYMENT_BATCH)
WAIT_KEY = "payments_wait_hours"


def wait(provider: str, settings: dict[str, Any]) -> timedelta:
    """How long a posted invoice's payments may wait to go with others (``payments_wait_hours``,
    else the registry's default for the provider; 0 for one without the setting)."""
    raw = settings.get(WAIT_KEY)
    if raw in (None, ""):
        entry = registry.find(provider)
        setting = entry.setting(WAIT_KEY) if entry is not None else None
        raw = setting.default if setting is not None and setting.default else "0"
    text = str(raw).strip()
    if not text.isdigit():
        raise ConfigError(f"setting {WAIT_KEY}: {raw!r} is not a whole number of hours")
    return timedelta(hours=int(text))


def released(ctx: JobContext) -> bool:
    """Whether this run applies the payments waiting on posted invoices (every one of them, in
    calls of :data:`BATCH`): when the oldest has waited ``payments_wait_hours``, a full call's
    worth is waiting, or a due refund's order is among them (a credit note is never set against
    an invoice whose payments are still to come: it would be allocated, then the payments
    refused as more than is due)."""
    now = ctx.clock.now()
    with ctx.store.session() as s:
        waiting = waiting_payments(s, ctx.connection.id, now)
        if not waiting.invoices:
            return False
        limit = wait(ctx.connection.provider, ctx.connection.settings or {})
        if waiting.payments >= BATCH or waiting.oldest is None or waiting.first_due is None:
            return True
        # the oldest's wait by today's setting (a shorter one set since counts at once)
        if utc(waiting.oldest) <= now - limit or utc(waiting.first_due) <= now:
            return True
        return refund_awaits_payments(s, ctx.connection.id, now)


def reference(number: str, payment_no: int, own: str | None) -> str:
    """The reference a payment is applied under: the order's number and the payment's, then the
    shop's own reference. Unique per order and payment, so the look-up after a lost answer
    finds exactly this payment (and the merchant reads where it came from)."""
    text = f"{number} payment {payment_no}" + (f" {own}" if own else "")
    return text[:255]


def account_code(settings: dict[str, Any]) -> str:
    code = str(settings.get("payment_account_code") or "").strip()
    if not code:
        raise ConfigError(
            "setting payment_account_code: the account payments are applied into is not set"
        )
    return code


@dataclass
class _Due:
    """One payment of a job to apply."""

    worker: _Worker
    payment_id: int
    payment_no: int
    amount: Decimal
    date: datetime
    state: str
    reference: str


def pay_batch(ctx: JobContext, workers: list[_Worker]) -> list[str]:
    """Apply the unapplied payments of these claimed jobs (their invoices at the provider).
    Returns one outcome per job."""
    outcomes: dict[int, str] = {}
    due = _load(ctx, workers)
    try:
        _look_up(ctx, due, outcomes)
        sent = _claim(due, outcomes)
        for start in range(0, len(sent), BATCH):
            _send(ctx, sent[start : start + BATCH], outcomes)
    except BaseException as err:  # the call failed as a whole: so did each job still open
        for w in workers:
            if w.job_id in outcomes:
                continue
            held = isinstance(err, ClaimLost) and w.job_id not in err.lost
            ended = w.settle(err, still_held=held)
            if ended is None:
                raise
            outcomes[w.job_id] = ended
    for w in workers:
        if w.job_id not in outcomes:
            outcomes[w.job_id] = _finish(w, due)
    return [outcomes[w.job_id] for w in workers]


def _load(ctx: JobContext, workers: list[_Worker]) -> list[_Due]:
    due = []
    with ctx.store.session() as s:
        for w in workers:
            for p in unapplied_payments(s, w.order.id):
                due.append(
                    _Due(
                        w,
                        p.id,
                        p.payment_no,
                        Decimal(p.amount),
                        p.date,
                        p.state or "pending",
                        reference(w.order.number, p.payment_no, p.reference),
                    )
                )
    return due


def _look_up(ctx: JobContext, due: list[_Due], outcomes: dict[int, str]) -> None:
    """Payments an earlier call may have applied: found ones are recorded ``posted``."""
    unclear = [d for d in due if d.state == "posting"]
    if not unclear:
        return
    invoices = sorted({d.worker.remote_id for d in unclear})
    found = ctx.connector.find_payments(invoices)
    for d in unclear:
        match = _match(d, found)
        if match is not None:
            log.warning(
                "invoice %s: payment %d was applied by an earlier call (%s): not sent again",
                d.worker.order.number,
                d.payment_no,
                match.remote_id,
            )
            if not _record(d, match, "found"):
                outcomes[d.worker.job_id] = d.worker.lost(f"payment {d.payment_no} found")
            d.state = "posted"
        else:
            d.state = "pending"  # looked up and truly absent: sent below


def _match(d: _Due, found: list[AppliedPayment]) -> AppliedPayment | None:
    for p in found:
        if p.invoice_remote_id == d.worker.remote_id.lower() and p.reference == d.reference:
            return p
    return None


def _claim(due: list[_Due], outcomes: dict[int, str]) -> list[_Due]:
    """Mark the payments to send ``posting`` (committed before the call), job by job while its
    claim holds. Returns those marked."""
    marked = []
    for w in {id(d.worker): d.worker for d in due}.values():
        if w.job_id in outcomes:
            continue
        mine = [d for d in due if d.worker is w and d.state != "posted"]
        if not mine:
            continue
        if not w.mark_payments([d.payment_id for d in mine]):
            outcomes[w.job_id] = w.lost()
            continue
        marked += mine
    return marked


def _send(ctx: JobContext, batch: list[_Due], outcomes: dict[int, str]) -> None:
    from synccli.sync.invoices import _fence

    code = account_code(ctx.connection.settings or {})
    jobs = list({id(d.worker): d.worker for d in batch}.values())
    payments = [
        PaymentToApply(d.worker.remote_id, d.amount, d.date, d.reference, code) for d in batch
    ]
    with ctx.fenced(lambda: _fence(jobs), jobs[0].ttl):
        results = ctx.connector.apply_payments(payments)
    for d, result in zip(batch, results, strict=True):
        if isinstance(result, Rejected):
            d.state = "refused"
            d.worker.payment_refusals.append(
                f"payment {d.payment_no} ({_money(d.amount)}): "
                + "; ".join(result.errors or [result.message])
            )
            _refuse(d, "; ".join(result.errors or [result.message]))
        elif isinstance(result, TransientError):
            d.state = "posting"  # unclear: looked up before it is sent again
            d.worker.payment_unclear.append(result.message)
        else:
            if not _record(d, result, "posted"):
                outcomes[d.worker.job_id] = d.worker.lost(f"payment {d.payment_no} applied")
            d.state = "posted"


def _record(d: _Due, applied: AppliedPayment, how: str) -> bool:
    """Commit a payment the provider holds; False when the job's claim is no longer ours."""
    return d.worker.record_payment(d.payment_id, applied.remote_id, how)


def _refuse(d: _Due, error: str) -> None:
    d.worker.refuse_payment(d.payment_id, error)


def _finish(w: _Worker, due: list[_Due]) -> str:
    mine = [d for d in due if d.worker is w]
    if w.payment_refusals:
        return w.rejected(w.payment_refusals, outcome="payment_refused")
    if any(d.state != "posted" for d in mine):
        err = TransientError(
            "; ".join(w.payment_unclear) or "a payment got no clear answer: looked up next run"
        )
        return w.transient(err)
    return w.paid(len(mine))


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


# --- what the operator sees ----------------------------------------------------------------------
@dataclass
class PaymentView:
    """One payment of an order as ``invoices show``, ``trace invoice`` and ``status`` show it."""

    payment_no: int
    amount: str
    date: datetime
    method: str
    reference: str | None
    state: str  # posted | pending | refused
    remote_id: str | None = None  # the provider's payment (or, in a sale, the sale's id)
    error: str | None = None
    # an earlier call may have applied it (no clear answer): it is looked up before it is sent
    maybe_sent: bool = False


def payment_state(how: str, state: str | None, job_state: str | None) -> str:
    """posted | pending | refused. ``how``: the provider's ``documents.payments``. A payment
    that goes with its sale is posted when the sale is (a sale the provider has with another
    total, ``mismatch``, carries its payments too)."""
    if how == "applied":
        if state == "posted":
            return "posted"
        return "refused" if state == "refused" else "pending"
    return "posted" if job_state in ("posted", "mismatch") else "pending"


def payment_views(provider: str, rows: list[Any], job: Any | None) -> list[PaymentView]:
    from synccli.sync.context import connector_class

    how = connector_class(provider).capabilities.documents.payments
    job_state = job.state if job is not None else None
    views = []
    for p in rows:
        shown = payment_state(how, p.state, job_state)
        sale = job.remote_id if job is not None and shown == "posted" else None
        remote = p.remote_id if how == "applied" else sale
        views.append(
            PaymentView(
                p.payment_no,
                _money(Decimal(p.amount)),
                p.date,
                p.method,
                p.reference,
                shown,
                remote,
                p.error if how == "applied" else None,
                maybe_sent=how == "applied" and p.state == "posting",
            )
        )
    return views


def payment_totals(
    provider: str, counts: dict[tuple[str | None, str | None], int]
) -> dict[str, int]:
    """posted / pending / refused -> how many of the connection's payments (``status``)."""
    from synccli.sync.context import connector_class

    how = connector_class(provider).capabilities.documents.payments
    totals = {"posted": 0, "pending": 0, "refused": 0}
    for (state, job_state), n in counts.items():
        totals[payment_state(how, state, job_state)] += n
    return totals
