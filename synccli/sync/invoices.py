"""Posting orders as invoices through a durable outbox, exactly once.

Each order has one row in ``invoice_jobs`` whose idempotency key was fixed when it was enqueued,
before any call. ``post_invoices`` drains the due jobs of one connection:

1. **Claim** one due job at a time (:func:`synccli.store.invoices.claim_next`): ``SELECT ...
   FOR UPDATE SKIP LOCKED`` on PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on
   SQLite; the claim (``claimed_by`` / ``claimed_until``) is committed, so overlapping runs and
   hosts never work on the same job. A dry run lists the same due jobs, each planned by the same
   code (:func:`plan_invoices`), from the store alone.
2. **Look up first** when the job may have been sent before (``maybe_sent``, set with
   ``posting``, kept through ``invoices cancel`` and ``retry``): an earlier post got no clear
   answer (a crash, a timeout, a lost response, a 5xx, a run that stalled past its claim).
   ``find_invoice(number)`` then decides: found -> recorded as posted, nothing is sent again.
3. **Dependencies first** (the OCA connector's rule): the customer (``ensure_customer``) and every
   product (linked -> use; else ``find_product`` by exact code -> link; else ``create_product`` ->
   link + review item), each remote create committed at once.
4. **Post**: the job is marked ``posting`` and committed, then ``post_invoice(draft, key)``; the
   remote id is committed the moment the provider answers.

An invoice is ``posted`` only when the provider's total equals the order's; any other total
(or none) leaves the job in ``mismatch``, with the remote id kept and one email to the merchant.

**Fencing.** A claim lasts ``SYNC_CLAIM_SECONDS`` (:func:`~synccli.sync.context.claim_ttl`) and
can run out while its worker is stalled (a stopped process, a long Retry-After), after which
another run may take the job over. So the worker re-asserts (and renews) its claim right before
every write it sends for the job (the invoice, a product, a customer, Unleashed's Complete, each
retry: ``HttpClient.fence``) and in every state write (``posting``, posted, rejected, released);
one write never waits more than half the claim in retries and Retry-After sleeps (beyond that the
job is released as transient). A worker that lost its claim stops: it sends nothing more and
leaves the job, and its emails, to the run that holds it now (outcome ``lost``).

Outcomes (which error leads to which is one table, :mod:`synccli.outcomes`): transient (retried
next run, no attempt counted against the merchant), rejected (email the merchant once per distinct
error, retry on the slow schedule, give up after the configured age with one final email), budget
exhausted (postponed to the reset, the run stops: exit 3), re-authorisation needed (the connection
is flagged, one email, the run stops: exit 5). Every attempt is a row in ``invoice_attempts``.

Connection settings read here: ``retry_schedule`` ("2h,4h,8h,12h,24h": the delay after the 1st,
2nd, ... rejection; the last one repeats), ``give_up_after`` ("7d", counted from the first
rejection), ``account_code`` (default account for lines without one), ``due_days`` (due date =
order date + N days; default none).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.exc import IntegrityError

from synccli import fmt, mailsafe, notify
from synccli.connectors.base import (
    InvoiceDraft,
    InvoiceLine,
    NewProduct,
    PaymentLine,
    PostedInvoice,
    RefundTarget,
    RefusedAfterCreate,
    RemoteProduct,
)
from synccli.errors import ClaimLost, ConfigError, Rejected, TransientError, UsageError
from synccli.outcomes import InvoiceAction, outcome_of
from synccli.remote_ids import refusal
from synccli.store.catalogue import product_by_sku
from synccli.store.claims import held_job, reassert
from synccli.store.db import Store
from synccli.store.invoices import (
    ACTIVE,
    INVOICES,
    PAYMENTS,
    attempts_of,
    claim_next,
    connection_names,
    due_as_recorded,
    due_jobs,
    job_rows,
    job_with_order,
    jobs_of_number,
    linked_products,
    order_job,
    order_number_exists,
    orders_without_job,
    payment_rows,
    payments_of,
    refund_remote_ids,
)
from synccli.store.models import (
    Connection,
    InvoiceAttempt,
    InvoiceJob,
    Link,
    Order,
    OrderLine,
    Product,
)
from synccli.store.runs import owner_id
from synccli.store.sync_state import (
    add_link,
    add_review,
    get_cursor,
    link_by_local,
    link_by_remote,
    posted_before,
    remember_invoice,
)
from synccli.sync import refunds
from synccli.sync.alerts import flag_reauth
from synccli.sync.context import JobContext, claim_ttl, connector_class, creation_lock
from synccli.sync.jobs import Job
from synccli.sync.orders import (
    LINE_KINDS,
    cannot_take,
    codeless,
    enqueue_missing,
    idempotency_key,
    lookup_values,
    order_total,
    queued_number,
)
from synccli.sync.payments import PaymentView, pay_batch, payment_views
from synccli.sync.payments import released as payments_released
from synccli.sync.payments import wait as payment_wait

log = logging.getLogger("synccli.job")

JOB = Job.POST_INVOICES
# ``mismatch``: the provider has the invoice, but its total is not the order's (a tax code whose
# rate there differs from the shop's, say). Not posted, not due again: the merchant corrects it at
# the provider (emailed once).
# ``waiting``: a refund whose order is not posted yet (no call is made for it until it is).
# ``paying``: the provider has the invoice, and the order's payments are still to be applied to
# it (sync/payments.py); ``posted`` once every one is.
STATES = (
    "pending",
    "waiting",
    "posting",
    "paying",
    "posted",
    "mismatch",
    "failed",
    "gave_up",
    "cancelled",
)
TRANSIENT_BREAKER = 5  # transient failures in a row stop the run (the provider is down)
DEFAULT_SCHEDULE = "2h,4h,8h,12h,24h"
DEFAULT_GIVE_UP = "7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- policy ------------------------------------------------------------------------------------
def parse_duration(text: str, setting: str = "duration") -> timedelta:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1w`` (a bare number is hours)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
    if not match:
        raise ConfigError(f"setting {setting}: {text!r} is not a duration such as 2h, 30m or 7d")
    value, unit = float(match.group(1)), match.group(2) or "h"
    if value <= 0:
        raise ConfigError(f"setting {setting}: {text!r} must be longer than zero")
    return timedelta(seconds=value * _UNITS[unit])


@dataclass(frozen=True)
class RetryPolicy:
    """The connection's posting settings, checked before any work."""

    schedule: tuple[timedelta, ...]
    give_up_after: timedelta
    due_days: int | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RetryPolicy:
        raw = settings.get("retry_schedule") or DEFAULT_SCHEDULE
        parts = raw if isinstance(raw, list) else str(raw).split(",")
        schedule = tuple(parse_duration(p, "retry_schedule") for p in parts if str(p).strip())
        if not schedule:
            raise ConfigError("setting retry_schedule: give at least one delay, e.g. 2h,4h,24h")
        give_up = parse_duration(settings.get("give_up_after") or DEFAULT_GIVE_UP, "give_up_after")
        raw_due = settings.get("due_days")
        due_days = None
        if raw_due not in (None, ""):
            if not str(raw_due).strip().isdigit():
                raise ConfigError(f"setting due_days: {raw_due!r} is not a whole number of days")
            due_days = int(str(raw_due).strip())
        return cls(schedule, give_up, due_days)

    def gives_up(self, first_failed_at: datetime | None, now: datetime) -> bool:
        """Whether a refusal at ``now`` is the last one (the job is given up, one final email).
        ``first_failed_at``: the job's first refusal (None: this one would be the first)."""
        return now >= (first_failed_at or now) + self.give_up_after

    def delay(self, rejections: int) -> timedelta:
        """The wait after the ``rejections``-th rejection (1-based); the last delay repeats."""
        return self.schedule[min(max(rejections, 1), len(self.schedule)) - 1]


# --- reports -----------------------------------------------------------------------------------
@dataclass
class InvoiceOutcome:
    number: str
    outcome: str  # posted|found|transient|rejected|gave_up|postponed|auth|skipped|would_post|...
    remote_id: str | None = None
    total: Decimal | None = None
    remote_total: Decimal | None = None
    error: str | None = None


@dataclass
class PostReport:
    connection: str
    dry_run: bool = False
    enqueued: int = 0
    due: int = 0
    posted: int = 0
    found: int = 0  # posted earlier without a clear answer, found by the lookup
    transient: int = 0
    rejected: int = 0
    gave_up: int = 0
    postponed: int = 0
    products_created: int = 0
    products_linked: int = 0
    emails: int = 0  # sent
    emails_failed: int = 0  # recorded but not sent: the merchant does not know
    total_mismatches: int = 0
    lost: int = 0  # jobs another run took over while this one was stalled (left to it)
    waiting: int = 0  # refunds whose order is not posted yet
    payments_applied: int = 0  # payments applied to posted invoices (or found applied)
    stopped: str | None = None
    unlinked_products: list[str] = field(default_factory=list)  # dry run: would look up/create
    unlinked_customers: list[str] = field(default_factory=list)  # dry run: would look up/create
    invoices: list[InvoiceOutcome] = field(default_factory=list)
    email_failures: list[str] = field(default_factory=list)  # what the merchant was not told

    def emailed(self, delivery: notify.Delivery, about: str) -> None:
        """Count one email to the merchant; an unsent one is a failure the run reports."""
        if delivery.sent:
            self.emails += 1
        elif delivery.recorded:
            self.emails_failed += 1
            self.email_failures.append(f"{about}; the merchant was not emailed: {delivery.error}")


@dataclass
class EnsuredProduct:
    remote_id: str
    code: str
    origin: str  # linked | matched | created


# --- the job -----------------------------------------------------------------------------------
def post_invoices(ctx: JobContext, limit: int | None = None) -> PostReport:
    """Post the connection's due invoice jobs (at most ``limit``). Raises BudgetExhausted or
    AuthError/ReauthRequired after recording the job's state, when the run must stop."""
    conn = ctx.connection
    report = PostReport(conn.name, dry_run=ctx.dry_run)
    ctx.counts = report
    policy = RetryPolicy.from_settings(conn.settings or {})
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    if ctx.dry_run:
        return _dry_run(ctx, limit, report)
    store = ctx.store
    started = ctx.clock.now()
    report.enqueued = enqueue_missing(store, conn, started)
    worker = f"{owner_id()}:{uuid.uuid4().hex[:8]}"[-100:]
    ttl = claim_ttl()
    mailer = notify.mailer_for(store.settings)
    done: set[int] = set()  # every job this run claimed (``limit`` counts each once)
    in_a_row = 0
    batch = max(1, ctx.connector.capabilities.invoice_batch)
    if (conn.settings or {}).get("invoice_batch"):  # a merchant may want smaller batches
        batch = max(1, min(batch, int(conn.settings["invoice_batch"])))
    applied = ctx.connector.capabilities.documents.payments == "applied"
    try:
        # the payments waiting on posted invoices first (a refund of one of those orders goes
        # after them), then the rest, then the payments again: those the run's invoices added
        for part in (PAYMENTS, INVOICES, PAYMENTS):
            if part == PAYMENTS and not (applied and payments_released(ctx)):
                continue  # they wait to go with others (``payments_wait_hours``)
            seen: set[int] = set()  # this pass's: an invoice posted above is paid below
            while True:
                claimed = _claim_batch(
                    ctx, worker, ttl, policy, mailer, report, (seen, done, limit, part), batch
                )
                if claimed is None:
                    break
                workers, paying = claimed
                outcomes = _post_batch(ctx, workers) if workers else []
                if paying:  # the invoices are at the provider: their payments, in one call
                    outcomes += pay_batch(ctx, paying)
                ctx.heartbeat()
                for outcome in outcomes:
                    in_a_row = in_a_row + 1 if outcome == "transient" else 0
                if in_a_row >= TRANSIENT_BREAKER:
                    last = report.invoices[-1].error if report.invoices else ""
                    report.stopped = (
                        f"{in_a_row} transient failures in a row; stopped until the next run"
                    )
                    raise TransientError(
                        f"post-invoices stopped: {in_a_row} transient failures in a row ({last})"
                    )
    finally:
        try:
            report.emails += notify.flush_pending(
                store, conn, ctx.clock.now(), mailer=mailer, created_before=started
            )
        except Exception:  # never hide the run's own outcome behind an email problem
            log.exception("could not send pending emails")
    return report


def _claim_batch(
    ctx: JobContext,
    worker: str,
    ttl: timedelta,
    policy: RetryPolicy,
    mailer: notify.Mailer,
    report: PostReport,
    sets: tuple[set[int], set[int], int | None, str],
    room: int,
) -> tuple[list[tuple[_Worker, InvoiceDraft]], list[_Worker]] | None:
    """Claim and prepare up to ``room`` due jobs of one pass of the run: those to post, and
    those whose invoice is posted and whose payments remain. None when nothing was due; jobs
    that ended while being prepared (found, invalid, rejected, transient) are in neither list.
    Where the provider takes several records a call, the batch's customers and products are
    looked up and created together first (:func:`_dependencies`). ``sets``: the pass's jobs so
    far, the run's, the run's ``limit`` (a job claimed again to be paid counts once) and the
    pass (``store.invoices.claim_next``'s ``part``)."""
    seen, done, limit, part = sets
    workers: list[_Worker] = []
    while len(workers) < room:
        now = ctx.clock.now()
        job_id = claim_next(ctx.store, ctx.connection.id, worker, now, ttl, seen, part)
        if job_id is None:
            break
        seen.add(job_id)
        w = _Worker(ctx, job_id, worker, ttl, policy, mailer, report)
        if job_id not in done:
            if limit is not None and len(done) >= limit:
                w.unclaim()
                break
            done.add(job_id)
            report.due += 1
        workers.append(w)
    if not workers:
        return None
    batched = ctx.connector.capabilities.dependency_batch and part != PAYMENTS
    deps = _dependencies(ctx, workers) if batched else None
    prepared: list[tuple[_Worker, InvoiceDraft]] = []
    paying: list[_Worker] = []
    for i, w in enumerate(workers):
        w.deps = deps
        try:
            result = w.guard(w.prepare)
        except BaseException:  # the run stops: the jobs not prepared yet go back to the queue
            for rest in workers[i + 1 :]:
                rest.unclaim()
            raise
        if isinstance(result, InvoiceDraft):
            prepared.append((w, result))
        elif w.pay_due:  # found at the provider, or posted by an earlier run
            paying.append(w)
    return prepared, paying


@dataclass
class Dependencies:
    """The customers and products of a batch's invoices, looked up and created together before
    the batch is prepared: per order id the customer's remote id, per SKU the product; or what
    refused or failed for it (raised again when its job is prepared). A job whose dependency is
    absent here finds it linked, or goes the one-by-one way."""

    customers: dict[int, str | Exception] = field(default_factory=dict)
    products: dict[str, EnsuredProduct | Exception] = field(default_factory=dict)


def _dependencies(ctx: JobContext, workers: list[_Worker]) -> Dependencies | None:
    """One look-up of the batch's unlinked customers, one create of those the provider lacks, one
    create of the products it lacks (#21: Xero takes several records a call). Every write is
    fenced by the batch's claims; a problem here only leaves the jobs to the one-by-one way."""
    from synccli.sync.customers import ensure_customers

    w0 = workers[0]
    try:
        with ctx.store.session() as s:
            rows = [job_with_order(s, w.job_id) for w in workers]
            dues = [Due.of(job, order) for job, order in rows]
            plans = plan_invoices(s, ctx.connection, dues, w0.policy, ctx.clock.now())
        # a job looked up first may be found (no dependency needed), an invalid one is refused,
        # one posted already only pays, a refund may wait for its order: each goes its own way
        ready = [
            (due.order, plan)
            for due, plan in zip(dues, plans, strict=True)
            if not (plan.problems or plan.look_up or due.paying or due.order.refund_of)
        ]
        deps = Dependencies()
        with ctx.fenced(lambda: _fence(workers), w0.ttl):
            unlinked = [order for order, plan in ready if plan.customer_remote_id is None]
            if unlinked:
                deps.customers = ensure_customers(ctx, unlinked)
            lines: dict[str, tuple[OrderLine, str]] = {}
            for order, plan in ready:
                for line in order.lines:
                    if line.sku in plan.missing_products:
                        lines.setdefault(line.sku, (line, order.number))
            if lines:
                deps.products = ensure_products(ctx, lines, w0.report)
        return deps
    except ClaimLost:
        return None
    except Exception:  # never a reason to stop: each job does its own, and meets the problem
        log.exception("could not prepare the batch's customers and products together")
        return None


def _post_batch(ctx: JobContext, workers: list[tuple[_Worker, InvoiceDraft]]) -> list[str]:
    """Post prepared jobs: one call where the provider takes several invoices at once (a
    refund is posted alone, as its provider takes it)."""
    alone = [(w, d) for w, d in workers if d.refund_of is not None]
    if alone:
        rest = [(w, d) for w, d in workers if d.refund_of is None]
        done = [w.guard(partial(w.send, d)) for w, d in alone]
        return done + (_post_batch(ctx, rest) if rest else [])
    if len(workers) == 1:
        w, draft = workers[0]
        return [w.guard(lambda: w.send(draft))]
    jobs = [w for w, _ in workers]
    try:
        with ctx.fenced(lambda: _fence(jobs), jobs[0].ttl):
            results = ctx.connector.post_invoices([(draft, w.key) for w, draft in workers])
    except BaseException as err:  # the call failed as a whole: so did each invoice of it
        held = [isinstance(err, ClaimLost) and w.job_id not in err.lost for w in jobs]
        ended = [w.settle(err, still_held=h) for w, h in zip(jobs, held, strict=True)]
        if any(e is None for e in ended):
            raise
        return [e for e in ended if e is not None]
    outcomes = []
    for (w, _), result in zip(workers, results, strict=True):
        if isinstance(result, Rejected):
            outcomes.append(w.guard(partial(w.refused, result)))
        elif isinstance(result, TransientError):  # no clear answer: looked up before re-sending
            outcomes.append(w.transient(result))
        else:
            outcomes.append(w.posted(result, "posted"))
    return outcomes


def _fence(workers: list[_Worker]) -> None:
    """Re-assert (and renew) the claims of the jobs a write is about to be sent for; raises
    ClaimLost naming those this run no longer holds."""
    w = workers[0]
    lost = reassert(w.store, [x.job_id for x in workers], w.worker, w.now(), w.ttl)
    if lost:
        raise ClaimLost(
            f"the claim on {len(lost)} invoice job(s) ran out and another run took them over "
            "(or they were cancelled): not sent",
            lost=frozenset(lost),
        )


class _Worker:
    """Works one claimed job through to one outcome."""

    def __init__(
        self,
        ctx: JobContext,
        job_id: int,
        worker: str,
        ttl: timedelta,
        policy: RetryPolicy,
        mailer: notify.Mailer,
        report: PostReport,
    ) -> None:
        self.ctx, self.store, self.conn = ctx, ctx.store, ctx.connection
        self.job_id, self.worker, self.ttl, self.policy = job_id, worker, ttl, policy
        self.mailer, self.report = mailer, report
        self.summary = ""
        self.maybe_sent = False  # when claimed: an earlier post may have reached the provider
        self.marked = False  # this attempt marked the job ``posting`` (its post may go out)
        self.exists = False  # the provider holds the record though it refused a later step
        self.target: RefundTarget | None = None  # a refund: the posted order it refunds
        # the invoice is at the provider (``remote_id``) and its payments are to be applied
        self.pay_due = False
        self.remote_id = ""
        self.payment_refusals: list[str] = []
        self.payment_unclear: list[str] = []
        self.deps: Dependencies | None = None  # its batch's customers and products, if done

    def now(self) -> datetime:
        return self.ctx.clock.now()

    def unclaim(self) -> None:
        """Give a claimed job back untouched (the run stops before it was worked on)."""
        with self.store.locked() as s:
            job = self.held(s)
            if job is not None:
                job.claimed_by, job.claimed_until = None, None

    def run(self) -> str:
        """Prepare and post this job alone."""
        prepared = self.guard(self.prepare)
        if not isinstance(prepared, InvoiceDraft):
            return prepared
        return self.guard(
            lambda: self.posted(self.ctx.connector.post_invoice(prepared, self.key), "posted")
        )

    def fence(self) -> None:
        """Right before a write is sent for this job: is the claim still ours? (renews it)"""
        _fence([self])

    def guard(self, step: Callable[[], Any]) -> Any:
        """Run a step, every write it sends fenced by this job's claim; turn its failure into this
        job's outcome (or re-raise to stop the run)."""
        try:
            with self.ctx.fenced(self.fence, self.ttl):
                return step()
        except BaseException as err:
            ended = self.settle(err)
            if ended is None:
                raise
            return ended

    def settle(self, err: BaseException, still_held: bool = False) -> str | None:
        """Record what ``err`` means for this job (the table's invoice action, synccli.outcomes).
        Returns the job's outcome, or None when the run must stop (the caller re-raises).
        ``still_held``: a write for several jobs found only others' claims lost, not this one's
        (nothing was sent: it goes back to the queue)."""
        action = outcome_of(err).invoice_action
        if action is InvoiceAction.LOST:
            return self.transient(err) if still_held else self.lost()
        if action is InvoiceAction.REJECTED:
            return self.rejected(getattr(err, "errors", None) or [_message(err)])
        if action is InvoiceAction.TRANSIENT:
            return self.transient(err)
        if action is InvoiceAction.POSTPONED:
            self.postponed(_message(err), getattr(err, "reset_at", None))
        elif action is InvoiceAction.AUTH:
            self.auth(_message(err))
        else:  # a bug or an outage: keep what we know, free the job, let it show
            self.release(f"{err.__class__.__name__}: {err}", outcome="error")
        return None

    def send(self, draft: InvoiceDraft) -> str:
        """Post this one invoice (inside :meth:`guard`)."""
        connector = self.ctx.connector
        post = connector.post_refund if draft.refund_of is not None else connector.post_invoice
        try:
            posted = post(draft, self.key)
        except Rejected as err:
            return self.refused(err)
        return self.posted(posted, "posted")

    def find(self, number: str) -> PostedInvoice | None:
        """The provider's invoice (or, for a refund, its credit note or return) under
        ``number``."""
        if self.target is not None:
            return self.ctx.connector.find_refund(number, self.target)
        return self.ctx.connector.find_invoice(number)

    def refused(self, err: Rejected) -> str:
        """The provider refused the post. When it says the number is in use, the invoice may be
        ours, posted before the store was restored from an older backup (or by a run whose every
        record was lost): it is looked up, and found it counts as posted, not as refused."""
        messages = err.errors or [err.message]
        if isinstance(err, RefusedAfterCreate):  # it exists: looked up, never posted again
            self.exists = True
        elif self.ctx.connector.number_taken(messages):
            found = self.find(self.order.number)
            if found is not None:
                log.warning(
                    "invoice %s: the provider has this number already (%s): found, not sent again",
                    self.order.number,
                    found.remote_id,
                )
                return self.posted(self.ctx.connector.finish_found(found), "found")
        return self.rejected(messages)

    def prepare(self) -> InvoiceDraft | str:
        """Everything before the post: the lookup after an unclear earlier post, the customer and
        products, the draft, and ``posting`` committed. Returns the draft, or the job's outcome
        when it ended here."""
        with self.store.session() as s:
            job, order = job_with_order(s, self.job_id)
            state_before, key = job.state, job.idempotency_key
            due = Due.of(job, order)
            self.maybe_sent = due.maybe_sent
            plan = plan_invoices(s, self.conn, [due], self.policy, self.now())[0]
        self.order, self.state_before, self.key = order, state_before, key
        if plan.problems:
            self.summary = "not sent: the order in the store is invalid"
            return self.rejected(plan.problems, outcome="invalid")
        if due.paying:  # the invoice is at the provider already: only its payments remain
            self.pay_due, self.remote_id = True, str(job.remote_id)
            return "paying"
        if order.refund_of:
            waits = self.refund_target(order, plan.products)
            if waits:
                return self.wait(waits)
        lookup = ""
        if plan.look_up:
            self.summary = f"look up invoice {order.number} (an earlier post had no clear answer)"
            found, asked = self.find(order.number), order.number
            if found is None and idempotency_key(self.conn.name, order.number) != key:
                earlier = self.renumbered(order, key)
                if isinstance(earlier, str):
                    return earlier  # held
                found, asked = earlier
            if found is not None:
                # e.g. an Unleashed order created but not completed yet: finished first
                return self.posted(self.ctx.connector.finish_found(found), "found", asked)
            lookup = f"looked up invoice {order.number}: not found; "
        self.summary = lookup + f"prepare invoice {order.number}: customer and products"
        customer_id = plan.customer_remote_id or self.customer(order)
        products = dict(plan.products)  # linked already: no call
        for line in order.lines:
            # a line without a product code is never matched to a product nor creates one
            if not codeless(line) and line.sku not in products:
                products[line.sku] = self.product(line, order.number)
        draft = self.draft(order, customer_id, products)
        self.summary = lookup + _summary(draft, self.key)
        if not self.mark_posting():
            return self.lost()
        return draft

    def refund_target(self, order: Order, linked: dict[str, EnsuredProduct]) -> str:
        """Set the posted order a refund gives money back on; or say why it waits for it.
        ``linked``: the products linked already; when every line's is, the target carries the
        refund's lines, so a look-up after a lost answer can tell ours from another refund."""
        of = str(order.refund_of)
        with self.store.session() as s:
            original = order_job(s, self.conn.id, of)
            known = refund_remote_ids(s, self.conn.id, of, order.number)
            due = due_as_recorded(s, self.conn.id, of)
        if original is None:
            return refunds.waiting_for(of, None)
        state, remote_id, detail = original
        if state != "posted" or not remote_id:
            return refunds.waiting_for(of, state)
        if known and due:  # an earlier refund of a part-paid invoice lowered it: read it
            due = None
        lines: tuple[InvoiceLine, ...] = ()
        if all(codeless(ln) or ln.sku in linked for ln in order.lines):
            lines = tuple(self.lines(order, linked))
        self.target = RefundTarget(of, remote_id, order.date, known, due, detail, lines)
        return ""

    def wait(self, why: str) -> str:
        """A refund whose order is not posted: nothing is sent, no attempt is counted against
        the merchant; it is looked at again each run (one attempt row when its reason
        changes, not one a run)."""
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:
                return self.lost()
            changed = job.state != "waiting" or job.last_error != why
            job.state, job.last_error = "waiting", why
            job.next_attempt_at = self.now()
            job.claimed_by, job.claimed_until = None, None
            if changed:
                self.summary = why
                self.attempt(s, "waiting", why)
        self.report.waiting += 1
        log.info("refund %s: %s", self.order.number, why)
        return self.outcome("waiting", error=why)

    def customer(self, order: Order) -> str:
        """The order's remote customer: as its batch found or created it, else one by one."""
        done = self.deps.customers.get(order.id) if self.deps is not None else None
        if isinstance(done, Exception):
            raise done
        return done or ensure_customer(self.ctx, order)

    def product(self, line: OrderLine, number: str) -> EnsuredProduct:
        """A line's remote product: as its batch found or created it, else one by one."""
        done = self.deps.products.get(line.sku) if self.deps is not None else None
        if isinstance(done, Exception):
            raise done
        return done or ensure_product(self.ctx, line, number, self.report)

    def renumbered(self, order: Order, key: str) -> tuple[PostedInvoice | None, str] | str:
        """The shop changed the order's number after a post of it got no clear answer: that post
        may be at the provider under the number the job was queued under. Look that one up too;
        when the key does not spell it out, hold the order (posting it under the new number
        could make a second invoice) for someone to check the provider."""
        earlier = queued_number(self.conn.name, key)
        if earlier is None:
            self.summary = "not sent: the order was renumbered after a post got no clear answer"
            return self.rejected(
                [
                    f"order {order.number} was renumbered after an earlier post of it got no "
                    "clear answer, and its first number cannot be read back: check the "
                    "provider for it, then cancel this invoice (it is there) or give the order "
                    "its first number back"
                ],
                outcome="invalid",
            )
        self.summary = f"look up invoice {earlier} (the order's number before it was changed)"
        found = self.find(earlier)
        if found is not None:
            log.warning(
                "invoice %s: found at the provider under its earlier number %s (%s)",
                order.number,
                earlier,
                found.remote_id,
            )
        return found, earlier

    # building ---------------------------------------------------------------------------------
    def draft(
        self, order: Order, customer_id: str, products: dict[str, EnsuredProduct]
    ) -> InvoiceDraft:
        due_days = self.policy.due_days
        due = order.date + timedelta(days=due_days) if due_days is not None else None
        lines = self.lines(order, products)
        return InvoiceDraft(
            number=order.number,
            date=order.date,
            currency=order.currency,
            customer_remote_id=customer_id,
            lines=lines,
            due_date=due,
            reference=order.number,
            total=Decimal(order.total),
            resend=self.maybe_sent,
            prices_include_tax=bool(order.prices_include_tax),
            refund_of=self.target,
            payments=[
                PaymentLine(Decimal(p.amount), p.date, p.method, p.reference)
                for p in order.payments
            ],
        )

    def lines(self, order: Order, products: dict[str, EnsuredProduct]) -> list[InvoiceLine]:
        """The order's lines as posted, against their remote products."""
        default_account = (self.conn.settings or {}).get("account_code")
        none = EnsuredProduct("", "", "codeless")
        return [
            InvoiceLine(
                product_remote_id=(none if codeless(ln) else products[ln.sku]).remote_id,
                code=(none if codeless(ln) else products[ln.sku]).code,
                kind=ln.kind or "product",
                description=ln.description,
                quantity=Decimal(ln.quantity),
                unit_price=Decimal(ln.unit_price),
                tax_code=ln.tax_code,
                account_code=ln.account_code or (str(default_account) if default_account else None),
                tax_rate=Decimal(ln.tax_rate or 0),
            )
            for ln in order.lines
        ]

    # state changes ----------------------------------------------------------------------------
    def mark_posting(self) -> bool:
        """Commit ``posting`` (and ``maybe_sent``) before the call, so a crash leaves a job that
        looks up first; False when the claim is no longer ours."""
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:
                return False
            job.state, job.maybe_sent = "posting", True
            job.claimed_until = self.now() + self.ttl
        self.marked = True
        return True

    def held(self, s: Any) -> InvoiceJob | None:
        """The job, locked, while this worker still holds its claim (every state write goes
        through here: a worker that lost the claim writes nothing)."""
        return held_job(s, self.job_id, self.worker, self.now())

    def attempt(
        self, s: Any, outcome: str, error: str | None = None, messages: list[str] | None = None
    ) -> None:
        s.add(
            InvoiceAttempt(
                job_id=self.job_id,
                run_id=self.ctx.run_id,
                at=self.now(),
                outcome=outcome,
                summary=(self.summary or None),
                error=error,
                messages=messages or None,
            )
        )

    def outcome(self, outcome: str, **kw: Any) -> str:
        self.report.invoices.append(
            InvoiceOutcome(self.order.number, outcome, total=Decimal(self.order.total), **kw)
        )
        return outcome

    def posted(self, posted: PostedInvoice, how: str, asked: str | None = None) -> str:
        """Record what the provider holds: ``posted`` when its total is the order's, else
        ``mismatch`` (not due again: posting it once more would make a second invoice).
        ``asked``: the number it was sent or looked up under, when not the order's own."""
        why = refusal(
            f"invoice {self.order.number}",
            posted.remote_id,
            asked or self.order.number,
            posted.number,
        )
        if why:  # never a posted invoice pointing at nothing, or at another invoice
            return self.rejected([why])
        now = self.now()
        mismatch = total_mismatch(posted.total, Decimal(self.order.total))
        # payments go on only once the invoice is the order's (a mismatch waits for the merchant)
        pays = mismatch is None and self.applies_payments()
        # its payments wait to go in one call with others (the run's payments pass, or a later
        # run's: sync/payments.py), due to go alone once they have waited long enough
        pay_from = now + payment_wait(self.conn.provider, self.conn.settings or {})
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:  # the job stays marked maybe_sent: its new holder looks it up
                return self.lost(f"the provider has it as {posted.remote_id}")
            job.state = "posted" if mismatch is None else "mismatch"
            job.remote_id, job.remote_total = posted.remote_id, posted.total
            job.remote_detail = posted.detail
            job.posted_at, job.last_error = now, mismatch or posted.note
            job.claimed_by, job.claimed_until = None, None
            if pays:
                job.state, job.next_attempt_at = "paying", pay_from
            self.attempt(s, how, mismatch)
            # kept when the shop deletes the order row (and with it this job)
            remember_invoice(
                s, self.conn.id, self.order.id, self.order.number, posted.remote_id, now
            )
        number = self.order.number
        if mismatch is not None:
            self.report.total_mismatches += 1
            # an error, not a warning: cron's -q shows it on stderr
            log.error(
                "invoice %s: at the provider as %s, but %s", number, posted.remote_id, mismatch
            )
            email = notify.mismatch_email(
                self.conn,
                number,
                mismatch,
                posted.remote_id,
                _money(Decimal(self.order.total)),
                None if posted.total is None else _money(Decimal(posted.total)),
            )
            key = f"invoice-mismatch:{self.conn.id}:{self.job_id}:{posted.remote_id}"[:255]
            self.report.emailed(
                notify.send_once(self.store, self.conn, key, email, now, mailer=self.mailer),
                f"invoice {number}: the provider's total differs from the order's",
            )
            return self.outcome(
                "mismatch", remote_id=posted.remote_id, remote_total=posted.total, error=mismatch
            )
        if how == "found":
            self.report.found += 1
        else:
            self.report.posted += 1
        log.info("invoice %s %s as %s", number, how, posted.remote_id)
        self.remote_id = posted.remote_id
        return self.outcome(how, remote_id=posted.remote_id, remote_total=posted.total)

    # payments (sync/payments.py) -------------------------------------------------------------
    def applies_payments(self) -> bool:
        """Whether the order has payments that the provider takes after the invoice, one by
        one, and that are not all applied yet."""
        if self.ctx.connector.capabilities.documents.payments != "applied":
            return False
        if self.order.refund_of:  # a refund's credit note takes no payments of its own
            return False
        return any(p.state != "posted" for p in self.order.payments)

    def mark_payments(self, payment_ids: list[int]) -> bool:
        """Commit ``posting`` on the payments about to be sent (a crash or a lost answer then
        leaves them looked up first); False when the claim is no longer ours."""
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:
                return False
            for row in payment_rows(s, self.order.id, payment_ids):
                row.state, row.error = "posting", None
            job.state = "paying"
            job.claimed_until = self.now() + self.ttl
        return True

    def record_payment(self, payment_id: int, remote_id: str, how: str) -> bool:
        """Commit a payment the provider holds (``how``: posted, or found by the look-up)."""
        with self.store.locked() as s:
            if self.held(s) is None:
                return False
            for row in payment_rows(s, self.order.id, [payment_id]):
                row.state, row.remote_id, row.error = "posted", remote_id, None
                row.posted_at = self.now()
        self.report.payments_applied += 1
        log.info("invoice %s: payment %s %s as %s", self.order.number, payment_id, how, remote_id)
        return True

    def refuse_payment(self, payment_id: int, error: str) -> bool:
        """Commit the provider's refusal of a payment (it was not applied: sent again later)."""
        with self.store.locked() as s:
            if self.held(s) is None:
                return False
            for row in payment_rows(s, self.order.id, [payment_id]):
                row.state, row.error = "refused", error
        return True

    def paid(self, applied: int) -> str:
        """Every payment is applied: the job is ``posted``."""
        self.summary = (
            f"apply {applied} payment(s) to invoice {self.order.number} ({self.remote_id})"
        )
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:
                return self.lost("its payments are applied")
            job.state, job.last_error = "posted", None
            job.claimed_by, job.claimed_until = None, None
            self.attempt(s, "paid")
        return "paid"

    def rejected(self, messages: list[str], outcome: str = "rejected") -> str:
        now = self.now()
        messages = [m.strip() for m in messages if m and m.strip()]  # each kept whole
        error = "; ".join(messages) or "rejected"
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:  # no email either: the job is the new holder's
                return self.lost(f"refused: {error}")
            if self.marked and not self.exists:  # refused: nothing of it exists there
                job.maybe_sent = False
            job.attempts = (job.attempts or 0) + 1
            job.first_failed_at = job.first_failed_at or now
            give_up_at = job.first_failed_at + self.policy.give_up_after
            gave_up = self.policy.gives_up(job.first_failed_at, now)
            job.state = "gave_up" if gave_up else "failed"
            job.next_attempt_at = (
                now if gave_up else min(now + self.policy.delay(job.attempts), give_up_at)
            )
            job.last_error = error
            job.claimed_by, job.claimed_until = None, None
            attempts, first_failed, next_at = job.attempts, job.first_failed_at, job.next_attempt_at
            self.attempt(s, outcome, error, messages)
        number = self.order.number
        paying = outcome == "payment_refused"  # the invoice is posted: its payments were refused
        if gave_up:
            self.report.gave_up += 1
            email = notify.gave_up_email(
                self.conn, number, messages, attempts, first_failed, payments=paying
            )
            key = f"invoice-gave-up:{self.conn.id}:{self.job_id}:{first_failed.isoformat()}"
            log.error("invoice %s: gave up after %d rejection(s): %s", number, attempts, error)
        else:
            self.report.rejected += 1
            email = notify.rejected_email(
                self.conn,
                number,
                messages,
                next_at,
                give_up_at,
                self.order.refund_of,
                payments=paying,
            )
            digest = hashlib.sha256(error.encode("utf-8")).hexdigest()[:24]
            key = f"invoice-rejected:{self.conn.id}:{self.job_id}:{digest}"
            log.error("invoice %s rejected (retry at %s): %s", number, fmt.minute(next_at), error)
        self.report.emailed(
            notify.send_once(self.store, self.conn, key, email, now, mailer=self.mailer),
            f"invoice {number} {'given up' if gave_up else 'refused'}",
        )
        return self.outcome("gave_up" if gave_up else outcome, error=error)

    def release(
        self, error: str, outcome: str, next_at: datetime | None = None, restore: bool = False
    ) -> bool:
        """Free the claim without counting an attempt against the merchant. False when the
        claim was no longer ours (nothing written)."""
        with self.store.locked() as s:
            job = self.held(s)
            if job is None:
                return False
            if restore and job.state == "posting" and self.state_before != "posting":
                job.state = self.state_before  # refused before the provider processed anything
                job.maybe_sent = self.maybe_sent
            job.last_error = error
            job.claimed_by, job.claimed_until = None, None
            if next_at is not None:
                job.next_attempt_at = next_at
            self.attempt(s, outcome, error)
        return True

    def transient(self, err: BaseException) -> str:
        message = getattr(err, "message", str(err))
        if not self.release(message, "transient", next_at=self.now()):
            return self.lost()
        self.report.transient += 1
        log.info("invoice %s: transient failure, retried next run: %s", self.order.number, message)
        return self.outcome("transient", error=message)

    def postponed(self, message: str, reset_at: datetime | None) -> None:
        reset = reset_at or self.now() + timedelta(hours=1)
        self.release(message, "budget", next_at=reset, restore=True)
        self.report.postponed += 1
        self.report.stopped = f"budget exhausted until {reset:%Y-%m-%d %H:%M} UTC"
        self.outcome("postponed", error=message)

    def auth(self, message: str) -> None:
        self.release(message, "auth", restore=True)
        self.report.stopped = "the connection needs re-authorisation"
        self.outcome("auth", error=message)
        delivery = flag_reauth(self.store, self.conn, message, self.now(), mailer=self.mailer)
        self.report.emailed(delivery, "the connection needs re-authorisation")

    def lost(self, detail: str = "") -> str:
        """This worker's claim ran out while it was stalled and another run holds the job now (or
        an operator cancelled it): nothing more is sent or written for it here."""
        number = self.order.number
        why = "taken over by another run (this one stalled past its claim) or cancelled"
        why += f"; {detail}" if detail else ""
        log.warning("invoice %s: claim lost, left to its new holder: %s", number, why)
        self.report.lost += 1
        return self.outcome("lost", error=why)


def _message(err: BaseException) -> str:
    return getattr(err, "message", None) or str(err)


def _money(value: Decimal) -> str:
    """2 decimal places unless the value has more (24.0000 from the store -> 24.00)."""
    cents = value.quantize(Decimal("0.01"))
    return str(cents if cents == value else value)


def total_mismatch(remote_total: Decimal | None, order_total: Decimal) -> str | None:
    """Why the provider's total does not count as the order's, or None when it is the same."""
    if remote_total is None:
        return f"the provider did not say its total (the order's is {_money(order_total)})"
    if Decimal(remote_total) != order_total:
        return (
            f"the provider's total {_money(Decimal(remote_total))} differs from the order's "
            f"{_money(order_total)}"
        )
    return None


def _summary(draft: InvoiceDraft, key: str) -> str:
    return (
        f"post invoice {draft.number}: {len(draft.lines)} line(s), "
        f"total {fmt.number(draft.total if draft.total is not None else Decimal(0))} "
        f"{draft.currency}, customer {draft.customer_remote_id}, idempotency key {key}"
    )


def _local_problems(
    order: Order, provider: str, settings: dict[str, Any], *, connection: str = "NAME"
) -> list[str]:
    """What makes an order (inserted straight into the tables, or added before a check existed)
    impossible to post as it is: among it, a value the provider cannot look up exactly, which
    could post the order twice after a lost answer."""
    problems = []
    bad = mailsafe.first_unsafe(order.number)
    if bad:  # as `invoices add` refuses it: the number reaches email subjects and look-ups
        problems.append(f"number contains control characters or line breaks ({bad})")
    searchable = connector_class(provider)
    for path, value in lookup_values(order):
        why = searchable.unmatchable(value)
        if why:
            problems.append(f"{path} {value!r} {why}")
    inclusive = bool(order.prices_include_tax)
    # as `invoices add` refuses it (rows written straight into the tables)
    paid = sum((Decimal(p.amount) for p in order.payments), Decimal(0)) if order.payments else None
    why = cannot_take(
        provider,
        inclusive,
        any(codeless(ln) for ln in order.lines),
        settings,
        paid,
        Decimal(order.total),
        connection=connection,
        refund=bool(order.refund_of),
    )
    if why:
        problems.append(why)
    if paid is not None and paid > Decimal(order.total):
        problems.append(f"payments add up to {paid}, more than the order's total {order.total}")
    if not order.lines:
        problems.append(f"order {order.number} has no lines")
    for ln in order.lines:
        if not ln.sku and not codeless(ln):
            problems.append(f"line {ln.line_no}: sku is empty")
        if (ln.kind or "product") not in LINE_KINDS:  # a row the shop wrote: never guessed
            problems.append(f"line {ln.line_no}: kind {ln.kind!r} is not one of {LINE_KINDS}")
        if ln.quantity is None or Decimal(ln.quantity) < 0:
            problems.append(f"line {ln.line_no}: quantity must not be negative")
        if ln.unit_price is None:
            problems.append(f"line {ln.line_no}: unit_price is missing")
    if not problems:
        computed = order_total(order.lines, inclusive)
        if Decimal(order.total) != computed:
            problems.append(
                f"order total {order.total} does not match its lines ({computed}, tax included)"
            )
    return problems


# --- dependencies --------------------------------------------------------------------------------
def ensure_customer(ctx: JobContext, order: Order) -> str:
    """The remote customer id for the order: linked, matched or created once
    (:func:`synccli.sync.customers.ensure_customer`, which serialises workers per customer)."""
    from synccli.sync.customers import ensure_customer as ensure

    return ensure(ctx, order)


def _linked(ctx: JobContext, sku: str) -> EnsuredProduct | None:
    with ctx.store.session() as s:
        return _linked_products(s, ctx.connection.id, [sku]).get(sku)


def _linked_products(s: Any, connection_id: int, skus: Iterable[str]) -> dict[str, EnsuredProduct]:
    """The products of these SKUs linked to the provider's (no call needed for them)."""
    return {
        sku: EnsuredProduct(remote_id, code or sku, "linked")
        for sku, (remote_id, code) in linked_products(s, connection_id, skus).items()
    }


def ensure_product(
    ctx: JobContext,
    line: OrderLine,
    order_number: str | None = None,
    report: PostReport | None = None,
) -> EnsuredProduct:
    """The remote product for an order line: the linked one; else the provider's product with
    exactly this code (linked now); else one created from the line (linked, origin "created",
    and a "created_product" review item, committed the moment the provider answers). Where the
    last pull read the whole catalogue (:func:`_create_first`), the create goes first and the
    look-up follows only when the provider says it has the code."""
    sku = line.sku
    found = _linked(ctx, sku)
    if found is not None:
        return found
    with creation_lock(ctx, "product", sku):
        found = _linked(ctx, sku)  # another worker may have linked it while we waited
        if found is not None:
            return found
        # this clock just before each call: what it answers is at least this new
        asked = ctx.clock.now()
        if _create_first(ctx):
            made = ctx.connector.create_products([_new_product(ctx, line)])[0]
            return _created_or_matched(ctx, line, order_number, report, made, asked)
        remote = ctx.connector.find_product(sku)
        if remote is not None:
            return _matched(ctx, line, order_number, report, remote, asked)
        asked = ctx.clock.now()
        created = ctx.connector.create_product(_new_product(ctx, line))
        return _created(ctx, line, order_number, report, created, asked)


def ensure_products(
    ctx: JobContext, lines: dict[str, tuple[OrderLine, str]], report: PostReport
) -> dict[str, EnsuredProduct | Exception]:
    """:func:`ensure_product` for the products of a batch's invoices at once (``lines``: a line
    and its order number by SKU): one create of every product the provider lacks
    (``create_products``: one call at Xero), under every SKU's creation lock. Where a look-up
    must come first (no whole catalogue read yet), each goes the one-by-one way."""
    if not _create_first(ctx):
        return {}
    out: dict[str, EnsuredProduct | Exception] = {}
    with ExitStack() as locks:
        for sku in sorted(lines):
            locks.enter_context(creation_lock(ctx, "product", sku))
        with ctx.store.session() as s:
            out.update(_linked_products(s, ctx.connection.id, list(lines)))
        todo = [sku for sku in sorted(lines) if sku not in out]
        if not todo:
            return out
        asked = ctx.clock.now()
        try:
            made = ctx.connector.create_products([_new_product(ctx, lines[sku][0]) for sku in todo])
        except ClaimLost:
            return out  # nothing was sent: each goes the one-by-one way, under its own claim
        except Exception as err:  # the call failed: so did each product of it
            return {**out, **dict.fromkeys(todo, err)}
        for sku, result in zip(todo, made, strict=True):
            line, number = lines[sku]
            try:
                out[sku] = _created_or_matched(ctx, line, number, report, result, asked)
            except ClaimLost:
                raise
            except Exception as err:
                out[sku] = err
    return out


def _create_first(ctx: JobContext) -> bool:
    """Whether a product with no link may be created without a look-up first: the provider
    refuses a code it has (``code_taken``, read per element) and a completed pull read its
    whole catalogue (Xero: every pull, one call), so a code with no link is new unless it was
    created there since; that create is refused, and only then is it looked up and linked.
    Never a second product with one code."""
    caps = ctx.connector.capabilities
    if not (caps.dependency_batch and caps.full_catalogue_call):
        return False
    with ctx.store.session() as s:
        cursor = get_cursor(s, ctx.connection.id, "products")
    return cursor is not None and cursor.value is not None


def _new_product(ctx: JobContext, line: OrderLine) -> NewProduct:
    sku = line.sku
    return NewProduct(
        code=sku,
        name=(line.description or sku).strip()[:50] or sku,
        price=Decimal(line.unit_price),
        description=line.description,
        tax_code=line.tax_code,
        account_code=line.account_code or (ctx.connection.settings or {}).get("account_code"),
    )


def _created_or_matched(
    ctx: JobContext,
    line: OrderLine,
    order_number: str | None,
    report: PostReport | None,
    made: RemoteProduct | Rejected,
    asked: datetime,
) -> EnsuredProduct:
    """A create's outcome: linked as created; or, refused because the provider has the code
    (created there since the last pull), looked up and linked as matched; else the refusal.
    ``asked``: this clock just before the create."""
    if not isinstance(made, Rejected):
        return _created(ctx, line, order_number, report, made, asked)
    if not ctx.connector.code_taken(made.errors or [made.message]):
        raise made
    asked = ctx.clock.now()
    remote = ctx.connector.find_product(line.sku)
    if remote is None:  # it says taken, yet no exact match (another case, say): the refusal
        raise made
    return _matched(ctx, line, order_number, report, remote, asked)


def _matched(
    ctx: JobContext,
    line: OrderLine,
    order_number: str | None,
    report: PostReport | None,
    remote: RemoteProduct,
    asked: datetime,
) -> EnsuredProduct:
    sku = line.sku
    _believe(f"product {sku}", remote.remote_id, sku, remote.code)
    result = _link_product(
        ctx,
        sku,
        remote.remote_id,
        remote.code or sku,
        remote.name,
        remote.price,
        "matched",
        line,
        order_number,
        asked,
    )
    if report is not None:
        report.products_linked += 1
    return result


def _created(
    ctx: JobContext,
    line: OrderLine,
    order_number: str | None,
    report: PostReport | None,
    created: RemoteProduct,
    asked: datetime,
) -> EnsuredProduct:
    sku = line.sku
    new = _new_product(ctx, line)
    _believe(f"new product {sku}", created.remote_id, sku, created.code)
    result = _link_product(
        ctx,
        sku,
        created.remote_id,
        created.code or sku,
        created.name or new.name,
        new.price,
        "created",
        line,
        order_number,
        asked,
    )
    if report is not None:
        report.products_created += 1
    log.info("product %s created as %s (order %s)", sku, created.remote_id, order_number)
    return result


def _believe(what: str, remote_id: str, asked: str, got: str | None) -> None:
    """Refuse (Rejected: the invoice waits, the merchant hears) an answer naming no record or
    another code than the one asked for, before anything is linked to it."""
    why = refusal(what, remote_id, asked, got)
    if why:
        raise Rejected(why)


def _link_product(
    ctx: JobContext,
    sku: str,
    remote_id: str,
    remote_code: str,
    name: str | None,
    price: Decimal | None,
    origin: str,
    line: OrderLine,
    order_number: str | None,
    asked: datetime,
) -> EnsuredProduct:
    """Link the local product of ``sku`` (made from the line where there is none) to the
    provider's product ``remote_id``, as a look-up or a create made at ``asked`` (this clock
    just before the call) answered it."""
    conn_id, now = ctx.connection.id, ctx.clock.now()
    for attempt in (1, 2):
        try:
            with ctx.store.locked() as s:
                product = product_by_sku(s, conn_id, sku)
                if product is None:
                    product = Product(
                        connection_id=conn_id,
                        sku=sku,
                        name=(name or line.description or sku)[:255],
                        description=line.description,
                        price=price,
                        active=True,
                        updated_at=now,
                    )
                    s.add(product)
                    s.flush()
                other = link_by_remote(s, conn_id, "product", remote_id, lock=True)
                if other is not None and other.local_id != product.id:
                    # The provider's product is bound to another local product already: use it.
                    log.warning(
                        "product %s: remote %s is linked to local product %s",
                        sku,
                        remote_id,
                        other.local_id,
                    )
                    return EnsuredProduct(remote_id, other.remote_code or remote_code, "linked")
                link = other or link_by_local(s, conn_id, "product", product.id)
                ensured = EnsuredProduct(remote_id, remote_code, origin)
                if other is not None and _read_since(other, asked):
                    # Another job read the product while the call was under way, linked it to
                    # this local one and stored that later read (a new code, a ghost flag): this
                    # answer is the older copy, and the link stays as the store has it.
                    log.info(
                        "product %s: looked up at %s, before the read the store holds; "
                        "its link kept",
                        sku,
                        asked,
                    )
                    ensured = EnsuredProduct(remote_id, other.remote_code or remote_code, "linked")
                elif link is None:
                    add_link(
                        s,
                        conn_id,
                        "product",
                        product.id,
                        remote_id,
                        now,
                        remote_code=remote_code,
                        origin=origin,
                    )
                else:
                    link.remote_id, link.remote_code, link.state = remote_id, remote_code, "linked"
                    link.last_synced_at = now
                    link.fingerprint = None  # another remote record: compared in full next pull
                if origin == "created":
                    if link is not None:
                        link.origin = "created"  # ours, though a pull may have found it first
                    add_review(
                        s,
                        conn_id,
                        "created_product",
                        sku,
                        {
                            "remote_id": remote_id,
                            "code": remote_code,
                            "name": name,
                            "price": None if price is None else str(price),
                            "order": order_number,
                        },
                        now,
                    )
            return ensured
        except IntegrityError:
            if attempt == 2:
                raise
            # A pull linked or inserted the same product meanwhile: read again.
            found = _linked(ctx, sku)
            if found is not None:
                return found
    raise AssertionError("unreachable")


def _read_since(link: Link, asked: datetime) -> bool:
    """Whether ``link`` holds a read made after ``asked`` (a look-up's or a create's time): the
    record the store has of it is newer than that call's answer. A read at the same instant is
    as new, and the answer is written (as ``claim_reads`` applies it); a link with no read time
    holds nothing to rank."""
    return link.read_at is not None and link.read_at > asked


# --- planning: what a run does with each due job ----------------------------------------------
@dataclass
class Due:
    """A due job as the store has it: its order, whether an earlier post may have reached the
    provider, and when it was first refused (None: never)."""

    order: Order
    maybe_sent: bool
    first_failed_at: datetime | None = None
    queued: bool = True  # False: an order without a job yet (the run queues it first)
    # the provider has the invoice (recorded posted), and only its payments remain
    paying: bool = False

    @classmethod
    def of(cls, job: InvoiceJob, order: Order) -> Due:
        # ``posting``: a run marked it and then stopped (a crash) before the post's answer
        maybe_sent = bool(job.maybe_sent) or job.state == "posting"
        # a refused payment leaves the job failed (and a retry pending) with its invoice posted;
        # a ``posting`` job (a mismatch being checked again) is looked up first
        paying = (
            job.state != "posting"
            and job.posted_at is not None
            and bool(job.remote_id)
            and bool(order.payments)
            and not order.refund_of
        )
        return cls(order, maybe_sent, job.first_failed_at, paying=paying)


@dataclass
class InvoicePlan:
    """What a run does with one due job, decided from the store alone. The real run carries it
    out (the provider's answers decide the rest: found or not, matched or created); a dry run
    lists it. One planning function for both, so the dry run shows what the real run does."""

    number: str
    total: Decimal
    problems: list[str]  # invalid in the store: refused without a call
    gives_up: bool  # a refusal now is the last one (past give_up_after)
    look_up: bool  # an earlier post had no clear answer: the invoice is looked up first
    customer: str  # the order's customer, as a look-up names it (email, account or name)
    customer_remote_id: str | None  # linked already; None: looked up (created when missing)
    products: dict[str, EnsuredProduct]  # linked already: no call
    missing_products: list[str]  # looked up (created when missing), in line order
    paying: bool = False  # the invoice is at the provider: only its payments are applied
    waits: bool = False  # a refund whose order is not posted: nothing is sent for it

    @property
    def action(self) -> str:
        """post | look_up (then post when not found) | pay (the invoice is posted: apply its
        payments) | reject (invalid) | give_up | wait (a refund's order is not posted)."""
        if self.problems:
            return "give_up" if self.gives_up else "reject"
        if self.paying:
            return "pay"
        if self.waits:
            return "wait"
        return "look_up" if self.look_up else "post"


def plan_invoices(
    s: Any, conn: Connection, due: list[Due], policy: RetryPolicy, now: datetime
) -> list[InvoicePlan]:
    """The plan of each due job (the real run plans one job at a time, right after claiming it;
    a dry run all of them at once)."""
    skus = {ln.sku for d in due for ln in d.order.lines if ln.sku and not codeless(ln)}
    linked = _linked_products(s, conn.id, skus)
    plans = []
    for d in due:
        order = d.order
        problems = _local_problems(order, conn.provider, conn.settings or {}, connection=conn.name)
        product_lines = [ln for ln in order.lines if not codeless(ln)]
        products = {ln.sku: linked[ln.sku] for ln in product_lines if ln.sku in linked}
        missing = [ln.sku for ln in product_lines if ln.sku not in products]
        plans.append(
            InvoicePlan(
                number=order.number,
                total=Decimal(order.total),
                problems=problems,
                gives_up=policy.gives_up(d.first_failed_at, now),
                look_up=d.maybe_sent,
                customer=_customer_named(order),
                customer_remote_id=None if problems else _linked_customer(s, conn.id, order),
                products={} if problems else products,
                missing_products=[] if problems else list(dict.fromkeys(missing)),
                paying=d.paying,
                waits=bool(order.refund_of)
                and (order_job(s, conn.id, str(order.refund_of)) or ("", None))[0] != "posted",
            )
        )
    return plans


def _customer_named(order: Order) -> str:
    return (
        (order.customer_email or "").strip()
        or (order.customer_account or "").strip()
        or (order.customer_name or "").strip()
    )


def _linked_customer(s: Any, connection_id: int, order: Order) -> str | None:
    """The remote id of the order's customer when it is linked (as ``ensure_customer`` finds it,
    without creating anything); None when it is looked up, created, or refused there."""
    from synccli.sync.customers import KIND, _find_local

    try:
        local = _find_local(s, connection_id, order)
    except Rejected:  # ensure_customer refuses it, in its place among the steps
        return None
    link = link_by_local(s, connection_id, KIND, local.id) if local is not None else None
    return link.remote_id if link is not None else None


def _due_now(ctx: JobContext, limit: int | None) -> tuple[list[Due], int]:
    """The jobs a run would claim now, in its order (those already queued, then the orders it
    queues first), at most ``limit``; and how many orders it would queue."""
    now, conn_id = ctx.clock.now(), ctx.connection.id
    applied = connector_class(ctx.connection.provider).capabilities.documents.payments
    # the payments waiting on posted invoices go first when their batch is due, as in a run
    paying = applied == "applied" and payments_released(ctx)
    with ctx.store.session() as s:
        rows = due_jobs(s, conn_id, now, PAYMENTS) if paying else []
        rows += due_jobs(s, conn_id, now, INVOICES)
        due = [Due.of(job, order) for job, order in rows]
        unqueued = orders_without_job(s, conn_id)
        seen = posted_before(s, conn_id, [o.number for o in unqueued])
    # queued with next_attempt_at = now and ids after every job: claimed after the due ones
    due += [Due(o, o.number in seen, None, queued=False) for o in unqueued]
    return (due if limit is None else due[:limit]), len(unqueued)


def _dry_run(ctx: JobContext, limit: int | None, report: PostReport) -> PostReport:
    """What a run would do, planned by the real run's own code from the store alone: no call,
    no write."""
    policy = RetryPolicy.from_settings(ctx.connection.settings or {})
    due, report.enqueued = _due_now(ctx, limit)
    with ctx.store.session() as s:
        plans = plan_invoices(s, ctx.connection, due, policy, ctx.clock.now())
    products: set[str] = set()
    customers: set[str] = set()
    for plan in plans:
        report.due += 1
        report.invoices.append(
            InvoiceOutcome(
                plan.number,
                f"would_{plan.action}",
                total=plan.total,
                error="; ".join(plan.problems) or None,
            )
        )
        if plan.action in ("post", "look_up"):  # (a look-up that finds it needs neither)
            products.update(plan.missing_products)
            if plan.customer_remote_id is None:
                customers.add(plan.customer)
    report.unlinked_products = sorted(products)
    report.unlinked_customers = sorted(customers)
    return report


# --- list, show, retry, cancel ----------------------------------------------------------------
@dataclass
class InvoiceRow:
    connection: str
    number: str
    state: str
    attempts: int
    total: Decimal
    currency: str
    next_attempt_at: datetime | None
    remote_id: str | None
    remote_total: Decimal | None
    posted_at: datetime | None
    last_error: str | None
    created_at: datetime
    idempotency_key: str
    refund_of: str | None = None  # a refund: the order it gives money back on


@dataclass
class AttemptRow:
    at: datetime
    outcome: str
    summary: str | None
    error: str | None
    messages: list[str] = field(default_factory=list)  # the provider's, each whole


@dataclass
class InvoiceDetail:
    invoice: InvoiceRow
    order_date: datetime
    customer: dict[str, Any]
    lines: list[dict[str, Any]]
    first_failed_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None
    history: list[AttemptRow]
    # an earlier post may have reached the provider: the next post looks the invoice up first
    maybe_sent: bool = False
    payments: list[PaymentView] = field(default_factory=list)


def _row(job: InvoiceJob, order: Order, conn_name: str) -> InvoiceRow:
    due = job.next_attempt_at if job.state in ACTIVE else None
    return InvoiceRow(
        conn_name,
        order.number,
        job.state,
        job.attempts,
        order.total,
        order.currency,
        due,
        job.remote_id,
        job.remote_total,
        job.posted_at,
        job.last_error,
        job.created_at,
        job.idempotency_key,
        order.refund_of,
    )


def list_invoices(
    store: Store,
    connections: list[str] | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[InvoiceRow]:
    if state is not None and state not in STATES:
        raise UsageError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    with store.session() as s:
        if connections:
            known = connection_names(s, connections)
            missing = [n for n in connections if n not in known]
            if missing:
                raise UsageError(
                    f"no connection named {missing[0]!r} (see `synccli connections list`)"
                )
        rows = job_rows(s, connections, state, limit)
        return [_row(job, order, name) for job, order, name in rows]


def _find(s: Any, number: str, connection: str | None) -> tuple[InvoiceJob, Order, str]:
    if connection and not connection_names(s, [connection]):
        raise UsageError(f"no connection named {connection!r} (see `synccli connections list`)")
    rows = jobs_of_number(s, number, connection)
    if not rows:
        where = f" in connection {connection!r}" if connection else ""
        if order_number_exists(s, number, connection):
            raise UsageError(
                f"order {number!r}{where} has no invoice job yet: "
                "the next post-invoices run queues it"
            )
        raise UsageError(f"no invoice for order {number!r}{where} (see `synccli invoices list`)")
    if len(rows) > 1:
        names = ", ".join(sorted(r[2] for r in rows))
        raise UsageError(
            f"order {number!r} exists in several connections ({names}): add --connection"
        )
    job, order, name = rows[0]
    return job, order, name


def show_invoice(store: Store, number: str, connection: str | None = None) -> InvoiceDetail:
    with store.session() as s:
        job, order, name = _find(s, number, connection)
        conn = s.get(Connection, job.connection_id)
        payments = payment_views(conn.provider if conn else "", payments_of(s, order.id), job)
        history = [
            AttemptRow(a.at, a.outcome, a.summary, a.error, list(a.messages or []))
            for a in attempts_of(s, job.id)
        ]
        lines = [
            {
                "line": ln.line_no,
                "sku": ln.sku,
                "description": ln.description,
                "quantity": ln.quantity,
                "unit_price": ln.unit_price,
                "tax_code": ln.tax_code,
                "tax_rate": ln.tax_rate,
                "account_code": ln.account_code,
            }
            for ln in order.lines
        ]
        customer = {
            "email": order.customer_email,
            "account_number": order.customer_account,
            "name": order.customer_name,
        }
        return InvoiceDetail(
            _row(job, order, name),
            order.date,
            customer,
            lines,
            job.first_failed_at,
            job.claimed_by,
            job.claimed_until,
            history,
            maybe_sent=(job.maybe_sent or job.state == "posting")
            and job.state not in ("posted", "paying", "mismatch"),
            payments=payments,
        )


def retry_invoice(store: Store, number: str, connection: str | None, now: datetime) -> InvoiceRow:
    """Make the job due now (also from gave_up or cancelled), with a fresh rejection count.
    A ``mismatch`` (the provider has the invoice with another total) is checked again, never
    posted again: the job becomes ``posting``, so the next run looks the invoice up first and
    records it ``posted`` once the merchant has corrected its total at the provider. A job that
    may have been sent before (``maybe_sent``) keeps that mark: it is looked up first too."""
    with store.locked() as s:
        job, order, name = _find(s, number, connection)
        if job.state == "posted":
            raise UsageError(f"invoice {number} is already posted (remote id {job.remote_id})")
        if job.state == "mismatch":
            job.state, job.maybe_sent = "posting", True
        elif job.state != "posting":  # posting keeps its look-up-first marker
            job.state = "pending"
        job.next_attempt_at = now
        job.attempts = 0
        job.first_failed_at = None
        job.claimed_by, job.claimed_until = None, None
        return _row(job, order, name)


def cancel_invoice(
    store: Store, number: str, connection: str | None, now: datetime
) -> tuple[InvoiceRow, str | None]:
    """Stop posting this order. Returns the row and a warning when an earlier post may have
    reached the provider (``maybe_sent``, which the job keeps: a later retry looks it up first)."""
    with store.locked() as s:
        job, order, name = _find(s, number, connection)
        if job.state in ("posted", "mismatch"):
            raise UsageError(
                f"invoice {number} is already at the provider (remote id {job.remote_id}): "
                "void it there"
            )
        warning = None
        if Due.of(job, order).paying:  # the invoice is there; only its payments stop
            warning = (
                f"invoice {number} is at the provider (remote id {job.remote_id}); its payments "
                "not applied yet will not be: record them there, or retry it"
            )
        elif job.maybe_sent or job.state == "posting":
            warning = (
                f"an earlier post of invoice {number} got no clear answer: check the provider "
                "for it, it may exist there"
            )
        job.maybe_sent = job.maybe_sent or job.state == "posting"  # kept for a later retry
        job.state = "cancelled"
        job.claimed_by, job.claimed_until = None, None
        return _row(job, order, name), warning
