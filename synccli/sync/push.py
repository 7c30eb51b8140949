"""Pushed changes applied, and polls kept as the safety net (#23).

A webhook delivery is stored by the receiver (``synccli/store/webhooks.py``) and applied here,
never on the receiver's request path:

- **A record in the payload** (X-Series' products, stock and customers; Unleashed's when the
  payload carries them) is applied with no API call, through the code a pull applies its pages
  with (``products._Applier``, ``customers._apply_page``). What the store already holds wins when
  it is as new or newer: a stamp in the store's own units (X-Series' ``version``, Unleashed's
  ``LastModifiedOn``) ranks the record against it; a record with only a change time is applied
  only when that time is after the record's last read from the provider (a pull, a sweep, a
  fetch) by more than :data:`CLOCK_SLACK`, else it is fetched instead. Among deliveries of one
  entity the newest wins, so an older one arriving late is dropped. Cursors never move here:
  the poll still covers the change.
- **An id only** (Xero's Contacts and Invoices events, a record that cannot be read) is a hint:
  the next ``pull-products`` / ``link-customers`` fetches every pending one in the provider's
  largest batches and closes them only once the fetched records are stored. A hint whose record
  the provider no longer returns is closed and nothing is deleted (absence is not deletion).
- **Cadence** (``sync/cadence.py``): while deliveries of a stream are healthy the jobs poll that
  stream only every ``safety_poll``; once they stop, every run polls again. A whole poll closes
  the hints received before it began: it read them.

Exactly once: applying and closing an event commit in one transaction; ``mark_done`` moves only
open rows, and every step above is idempotent (a field is written only when it differs). Outside a
job, ``webhooks apply`` applies under the stream's job lease (``pull-products``,
``link-customers``), so it never runs beside a pull of the same connection: a pull that holds the
lease applies the events itself. A process can stall past its lease (stopped, swapped out, a slow
answer) and wake after another took the lease over: each transaction ``webhooks apply`` writes in
first renews the lease where it still holds it, and writes nothing where it does not (a fence,
``store.runs.hold_lease``); between look-up calls the lease is renewed too, so a long fetch keeps
it.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from synccli import registry
from synccli.clock import Clock, SystemClock, utc
from synccli.connectors import payloads
from synccli.connectors.base import Connector, RemoteCustomer, RemoteProduct, RemoteStock
from synccli.connectors.wire import stamp_version
from synccli.errors import LeaseBusy, LeaseLost
from synccli.procs import owner_id
from synccli.store.bulk import chunks
from synccli.store.customers import seen_by_id
from synccli.store.db import Store
from synccli.store.models import Connection, WebhookEventRow
from synccli.store.push import (
    any_unfollowed,
    applied_versions,
    close_unfollowed,
    cursor_updated,
    cursor_value,
    events_in,
    hints_covered,
    mark_polled,
    polled_at,
    restore_read_times,
    still_pending,
    to_hints,
)
from synccli.store.reference import kept_lists
from synccli.store.runs import acquire_lease, hold_lease, release_lease
from synccli.store.sync_state import links_for
from synccli.store.webhooks import mark_done
from synccli.sync.cadence import Cadence, cadence, hints_due
from synccli.sync.context import JobContext
from synccli.sync.jobs import Job

log = logging.getLogger("synccli.push")

# A record with only a change time (no stamp in the store's units) is applied when that time is
# after its last read by more than this: the provider's clock and ours may differ by seconds.
CLOCK_SLACK = timedelta(minutes=2)
# Events applied in one transaction. SQLite has one writer: the receiver's inserts wait while a
# batch is written, so its batches are short. PostgreSQL locks rows, not the database: fewer,
# larger transactions cost it less (bench/webhooks_burst.py --baseline, side by side).
BATCH = 500
SQLITE_BATCH = 100


def batch_size(store: Store) -> int:
    return SQLITE_BATCH if store.is_sqlite else BATCH


PRODUCT_STREAMS = ("products", "stock")
CUSTOMER_STREAMS = ("customers",)
# Xero's Invoices events and X-Series' sale.update are stored by the receiver but no job applies
# them (post-invoices looks its own invoices up): they are closed, not left open for ever.
FOLLOWED = (*PRODUCT_STREAMS, *CUSTOMER_STREAMS)
APPLY_LEASE = timedelta(minutes=2)
STOCK_SWEEP = "stock-sweep"  # products.STOCK_SWEEP: when a sweep last listed every position


# --- the report ---------------------------------------------------------------------------------


@dataclass
class PushReport:
    applied: int = 0  # pushed records applied from their payload (changed or not)
    changed: int = 0  # fields changed by them
    superseded: int = 0  # older than what the store holds or a newer delivery: dropped
    hinted: int = 0  # records that could not be applied from the payload: fetched instead
    fetched: int = 0  # hints fetched and stored
    covered: int = 0  # hints a whole poll read
    gone: int = 0  # hints whose record the provider no longer returns (nothing deleted)
    unfollowed: int = 0  # deliveries of streams no job applies (Xero invoices, X-Series sales)
    busy: bool = False  # a job of this connection held the lease: it applies them
    hints_in: float | None = None  # seconds until the hints are due by hint_wait (None: not)
    modes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The counts a job's report carries (none when nothing was pushed)."""
        counts = {
            k: v
            for k, v in vars(self).items()
            if k not in ("modes", "busy", "hints_in") and isinstance(v, int) and v
        }
        return {**counts, "modes": dict(self.modes)} if counts or self.modes else {}


# --- `webhooks apply`'s lease ---------------------------------------------------------------------


@dataclass
class _Hold:
    """The lease ``webhooks apply`` took for one stream's job, renewed as its work goes on."""

    store: Store
    job: str
    connection_id: int
    owner: str
    clock: Clock
    renewed: datetime | None = None

    def fence(self, s: Session) -> None:
        """In a transaction that writes, before its writes: renew the lease, or raise LeaseLost
        (the transaction then rolls back, having written nothing)."""
        now = self.clock.now()
        if not hold_lease(s, self.job, self.connection_id, self.owner, now, APPLY_LEASE):
            raise LeaseLost(f"the {self.job} lease was taken over: nothing more written")
        self.renewed = now

    def renew(self) -> None:
        """Between look-up calls: at most once a tenth of the lease, as a job's heartbeat."""
        now = self.clock.now()
        last = self.renewed
        if last is not None and last <= now < last + APPLY_LEASE / 10:
            return
        with self.store.session() as s:
            self.fence(s)


@dataclass
class _Applying(JobContext):
    """A context for ``webhooks apply``: no job's run, its writes fenced by the lease it holds
    (none in a dry run, which takes none). Within a job, the job's own lease fences them
    (``JobContext.fence``)."""

    hold: _Hold | None = None

    def heartbeat(self) -> None:
        if self.hold is not None:
            self.hold.renew()

    def fence(self, s: Session) -> None:
        if self.hold is not None:
            self.hold.fence(s)


# --- ranking ------------------------------------------------------------------------------------


def _rank(version: str | None, occurred: datetime) -> tuple[int, Any, datetime]:
    """An orderable key of a delivery: X-Series' integer version, else an ISO time."""
    text = (version or "").strip()
    if text.isdigit():
        return (1, int(text), utc(occurred))
    try:
        return (0, utc(datetime.fromisoformat(text.replace("Z", "+00:00"))), utc(occurred))
    except ValueError:
        return (0, utc(occurred), utc(occurred))


def _newest(rows: list[WebhookEventRow], applied: dict[str, list[Any]]) -> tuple[list, list]:
    """The newest delivery of each entity among ``rows``, and the rest (older than it, or than
    one applied before): (keep, dropped)."""
    best: dict[str, WebhookEventRow] = {}
    dropped: list[WebhookEventRow] = []
    for row in rows:
        earlier = best.get(row.entity_id)
        if earlier is None or _rank(row.version, row.occurred_at) > _rank(
            earlier.version, earlier.occurred_at
        ):
            if earlier is not None:
                dropped.append(earlier)
            best[row.entity_id] = row
        else:
            dropped.append(row)
    keep: list[WebhookEventRow] = []
    for entity, row in best.items():
        before = [_rank(v, at) for v, at, _ in applied.get(entity, [])]
        if before and _rank(row.version, row.occurred_at) < max(before):
            dropped.append(row)
        else:
            keep.append(row)
    return keep, dropped


# --- applying ------------------------------------------------------------------------------------


def outlet_of(ctx: JobContext) -> str | None:
    """The outlet whose stock is the shop's (``WebhookSupport.outlet_stock``), without a call:
    the setting, else the store's kept copy of the provider's lists; None when neither says."""
    settings = ctx.connection.settings or {}
    if settings.get("outlet_id"):
        return str(settings["outlet_id"])
    with ctx.store.read_session() as s:
        kept = kept_lists(s, ctx.connection.id, ctx.clock.now(), timedelta(days=3650))
    for value in kept.values():
        if isinstance(value, dict) and value.get("outlet_id"):
            return str(value["outlet_id"])
    return None


def apply_products(ctx: JobContext, report: PushReport) -> None:
    """Apply the pending product and stock deliveries that carry their record (no call)."""
    support = registry.get(ctx.connection.provider).webhooks
    outlet = outlet_of(ctx) if support and support.outlet_stock else None
    ctx.connector  # noqa: B018 - built (and primed from the store) before a transaction opens
    size = batch_size(ctx.store)
    while True:
        # Read and parse the batch without the write lock, which the receiver's inserts wait
        # behind on SQLite; pending product rows move only under this job's lease (held here),
        # and which are still pending is checked again under the lock.
        with ctx.store.read_session() as s:
            rows = events_in(s, ctx.connection.id, PRODUCT_STREAMS, "pending", size)
        if not rows:
            return
        batch = _ProductBatch(ctx, report, outlet)
        batch.read(rows)
        with ctx.writing() as s:
            still = still_pending(s, [row.id for row in rows])
            batch.apply(s, [row for row in rows if row.id in still])
            if ctx.dry_run:
                s.rollback()
                return


def _among(products: list[RemoteProduct], remote_id: str) -> bool:
    return any(p.remote_id == remote_id for p in products)


class _ProductBatch:
    """One transaction's product and stock deliveries."""

    def __init__(self, ctx: JobContext, report: PushReport, outlet: str | None):
        self.ctx, self.report, self.outlet = ctx, report, outlet
        self.readings: dict[int, payloads.Pushed | None] = {}
        self.conn_id = ctx.connection.id
        self.now = ctx.clock.now()
        self.applied: list[int] = []
        self.done: list[int] = []
        self.hints: list[int] = []

    def read(self, rows: list[WebhookEventRow]) -> None:
        """Each delivery's record as the pull reads one (no store access: outside the lock)."""
        self.readings = {row.id: self._read(row) for row in rows}

    def apply(self, s: Session, rows: list[WebhookEventRow]) -> None:
        from synccli.sync.products import FUTURE_SLACK, PullReport, _Applier, provider_now

        self.s = s
        readings = self.readings
        ours: list[WebhookEventRow] = []
        for row in rows:
            pushed = readings[row.id]
            if pushed is not None and pushed.product is None and pushed.stock is None:
                self.done.append(row.id)  # another outlet's stock: nothing of the shop's changed
            else:
                ours.append(row)
        keep: list[WebhookEventRow] = []
        for stream in PRODUCT_STREAMS:
            mine = [r for r in ours if r.stream == stream]
            ids = [r.entity_id for r in mine]
            newest, dropped = _newest(mine, applied_versions(self.s, self.conn_id, stream, ids))
            keep += newest
            self.done += [r.id for r in dropped]
        products: list[RemoteProduct] = []
        stock: list[RemoteStock] = []
        read = [(row, readings[row.id]) for row in keep]
        for row, pushed in read:
            if pushed is not None and pushed.stock is not None and pushed.changed_at is None:
                # X-Series' inventory.update carries no time of its own: its delivery's stands in.
                # A retry overtaking a newer change is then undone by the next stock poll (within
                # safety_poll), which re-reads every row changed since its cursor.
                pushed.changed_at = utc(row.received_at)
        links = links_for(self.s, self.conn_id, "product", [r.entity_id for r, _ in read])
        marks = self._marks()
        served = provider_now(self.ctx) + FUTURE_SLACK
        for row, pushed in read:
            if pushed is None:
                self.hints.append(row.id)
                continue
            link = links.get(row.entity_id)
            read_at = max([t for t in (link and link.last_synced_at, *marks) if t], default=None)
            verdict = self._verdict(pushed, read_at, served)
            if verdict == "hint":
                self.hints.append(row.id)
                continue
            if verdict == "done":
                self.done.append(row.id)
                continue
            if pushed.product is not None:
                products.append(pushed.product)
            if pushed.stock is not None:
                if row.entity_id not in links and not _among(products, row.entity_id):
                    # a product the store has not linked (a new one whose product.update comes
                    # after its inventory.update): stock alone would go nowhere, so the two are
                    # fetched together rather than the count waiting for the next stock poll
                    self.hints.append(row.id)
                    continue
                stock.append(pushed.stock)
            self.applied.append(row.id)
        before = {lk.id: lk.last_synced_at for lk in links.values()}
        counter = PullReport()
        applier = _Applier(self.ctx, self.s, self.now, [], authoritative=False)
        if products:
            applier.apply_products(products, counter)
        if stock:
            applier.apply_stock(stock, counter)
        self._close(counter.changed, before)

    def _read(self, row: WebhookEventRow) -> payloads.Pushed | None:
        if not isinstance(row.record, dict):
            return None
        return payloads.read(self.ctx.connection.provider, row.stream, row.record, self.outlet)

    def _marks(self) -> list[datetime]:
        """When the store last read every product and stock row (a whole poll, a sweep)."""
        found = [
            polled_at(self.s, self.conn_id, "products"),
            polled_at(self.s, self.conn_id, "stock"),
            cursor_updated(self.s, self.conn_id, STOCK_SWEEP),
        ]
        return [utc(t) for t in found if t is not None]

    def _verdict(self, pushed: payloads.Pushed, read_at: datetime | None, served: datetime) -> str:
        """ "apply", "done" (the store holds this or newer) or "hint" (cannot tell: fetch)."""
        caps = self.ctx.connector.capabilities
        record = pushed.product or pushed.stock
        if record is None:
            return "done"  # another outlet's stock: nothing of the shop's changed
        if not pushed.ranked:
            changed = pushed.changed_at
            if changed is not None and (read_at is None or changed > read_at + CLOCK_SLACK):
                return "apply"
            return "hint"
        stamp = record.updated_at
        if not caps.stamps_on_provider_clock and stamp is not None and stamp > served:
            return "hint"  # a stamp past the provider's clock (Unleashed's hours off) cannot rank
        if pushed.product is None and stamp is not None:
            cursor = cursor_value(self.s, self.conn_id, "stock")
            if cursor is not None and stamp_version(stamp) <= stamp_version(cursor):
                return "done"  # the stock feed has read this version or a newer one
        return "apply"  # a product: the applier ranks it against the stamp the store holds

    def _close(self, changed: int, before: dict[int, datetime | None]) -> None:
        s, report = self.s, self.report
        hints = self.hints
        if self.ctx.dry_run:
            report.applied += len(self.applied)
            report.changed += changed
            report.superseded += len(self.done)
            report.hinted += len(hints)
            return
        restore_read_times(s, before)
        to_hints(s, hints)
        report.applied += mark_done(s, self.applied, "applied", self.now)
        report.superseded += mark_done(s, self.done, "done", self.now)
        report.hinted += len(hints)
        report.changed += changed


def apply_customers(ctx: JobContext, report: PushReport) -> None:
    """Apply the pending customer deliveries that carry their record (no call)."""
    ctx.connector  # noqa: B018 - built (and primed from the store) before a transaction opens
    size = batch_size(ctx.store)
    while True:
        with ctx.writing() as s:
            rows = events_in(s, ctx.connection.id, CUSTOMER_STREAMS, "pending", size)
            if not rows:
                return
            _apply_customer_rows(ctx, s, rows, report)
            if ctx.dry_run:
                s.rollback()
                return


def _apply_customer_rows(
    ctx: JobContext, s: Session, rows: list[WebhookEventRow], report: PushReport
) -> None:
    conn_id, now = ctx.connection.id, ctx.clock.now()
    ids = [r.entity_id for r in rows]
    keep, dropped = _newest(rows, applied_versions(s, conn_id, "customers", ids))
    done = [r.id for r in dropped]
    seen = seen_by_id(s, conn_id, [r.entity_id for r in keep])
    polled = polled_at(s, conn_id, "customers")
    records: list[RemoteCustomer] = []
    applied: list[int] = []
    hints: list[int] = []
    for row in keep:
        pushed = (
            payloads.read(ctx.connection.provider, "customers", row.record, None)
            if isinstance(row.record, dict)
            else None
        )
        customer = pushed.customer if pushed is not None else None
        if pushed is None or customer is None:
            hints.append(row.id)
            continue
        cached = seen.get(row.entity_id)
        stored = cached.remote_updated_at if cached is not None else None
        if pushed.ranked and customer.updated_at is not None:
            if stored is not None and utc(customer.updated_at) < utc(stored):
                done.append(row.id)
                continue
        else:
            read_at = max([utc(t) for t in (cached and cached.seen_at, polled) if t], default=None)
            changed = pushed.changed_at
            if changed is None or (read_at is not None and changed <= read_at + CLOCK_SLACK):
                hints.append(row.id)
                continue
            customer.updated_at = stored  # no stamp of its own: the cache keeps the last one
        records.append(customer)
        applied.append(row.id)
    before = report.changed
    linked = link_records(ctx, s, records, now)
    report.changed = before + linked
    report.hinted += len(hints)
    if ctx.dry_run:
        report.applied += len(applied)
        report.superseded += len(done)
        return
    to_hints(s, hints)
    report.applied += mark_done(s, applied, "applied", now)
    report.superseded += mark_done(s, done, "done", now)


def link_records(ctx: JobContext, s: Session, records: list[RemoteCustomer], now: datetime) -> int:
    """Customers applied as a ``link-customers`` page applies them (links, review items, the
    seen-customers cache); answers the links made."""
    from synccli.store.sync_state import links_by_remote
    from synccli.sync.customers import (
        KIND,
        LinkReport,
        _apply_page,
        _load_unlinked,
        _Matcher,
        load_seen,
        save_seen,
    )

    if not records:
        return 0
    conn_id = ctx.connection.id
    links = list(links_by_remote(s, conn_id, KIND).values())
    matcher = _Matcher(_load_unlinked(s, conn_id), links, load_seen(s, conn_id))
    counts = LinkReport(dry_run=ctx.dry_run)
    _apply_page(ctx, s, matcher, records, counts, {}, now)
    if not ctx.dry_run:
        save_seen(s, conn_id, records, now)
    return counts.linked


# --- hints ----------------------------------------------------------------------------------------


def hints_cost_more(ctx: JobContext, streams: Sequence[str]) -> bool:
    """Whether fetching the open hints of ``streams`` by id would cost more calls than polling
    those streams (at least a call each, which reads them too): then the job polls instead. A
    provider that cannot look the records up by id always polls."""
    with ctx.store.read_session() as s:
        n = len({r.entity_id for r in events_in(s, ctx.connection.id, streams, "hint", 100_000)})
    if not n:
        return False
    connector = ctx.connector
    if set(streams) <= set(CUSTOMER_STREAMS):
        size = connector.customer_ids_a_call
        return size is None or math.ceil(n / size) > len(streams)
    caps = connector.capabilities
    batches = math.ceil(n / caps.lookup_batch) if caps.lookup_batch else 1
    return batches * (1 if caps.stock_in_product else 2) > len(streams)


def fetch_product_hints(ctx: JobContext, report: PushReport, streams: Sequence[str]) -> None:
    """Fetch every product (with its stock) an open hint of ``streams`` names, in the provider's
    largest batches, apply what comes back as a sweep does, and close the hints with it."""
    from synccli.sync.products import PullReport, _Applier

    with ctx.store.session() as s:
        rows = events_in(s, ctx.connection.id, streams, "hint", 100_000)
    if not rows:
        return
    ids = list(dict.fromkeys(r.entity_id for r in rows))
    size = ctx.connector.capabilities.lookup_batch or len(ids)
    found: list[RemoteProduct] = []
    read_at: dict[str, datetime] = {}  # when each was read: a later read stored wins
    for part in chunks(ids, size):  # no transaction held across the calls
        ctx.heartbeat()  # the lease renewed between look-ups: a long fetch keeps it
        before = ctx.clock.now()
        got = ctx.connector.get_products(list(part))
        read_at.update((p.remote_id, before) for p in got)
        found += got

    def store_them(s: Session, records: list[Any]) -> int:
        counter = PullReport()
        _Applier(ctx, s, ctx.clock.now(), [], authoritative=True, read_at=read_at).apply_products(
            records, counter
        )
        return counter.changed

    _close_hints(ctx, rows, found, report, store_them)


def fetch_customer_hints(ctx: JobContext, report: PushReport) -> None:
    """Fetch every customer an open hint names (Xero: ``GET /Contacts?IDs=``, comma lists kept
    under the URL limit), link them as a page, and close the hints. A provider that cannot look
    customers up by id leaves them to the next poll, which reads them."""
    with ctx.store.session() as s:
        rows = events_in(s, ctx.connection.id, CUSTOMER_STREAMS, "hint", 100_000)
    if not rows:
        return
    ids = list(dict.fromkeys(r.entity_id for r in rows))
    found: list[RemoteCustomer] = []
    for part in chunks(ids, ctx.connector.customer_ids_a_call or len(ids)):
        ctx.heartbeat()  # the lease renewed between look-ups: a long fetch keeps it
        got = ctx.connector.get_customers(list(part))
        if got is None:
            return
        found += got

    def store_them(s: Session, records: list[Any]) -> int:
        return link_records(ctx, s, records, ctx.clock.now())

    _close_hints(ctx, rows, found, report, store_them)


def _close_hints(
    ctx: JobContext,
    rows: list[WebhookEventRow],
    found: list[Any],
    report: PushReport,
    store_them: Callable[[Session, list[Any]], int],
) -> None:
    got = {str(r.remote_id).lower() for r in found}
    gone = {r.entity_id.lower() for r in rows} - got
    if gone:
        # absence is not deletion: the sweep and the ghost rules judge it, not a webhook
        log.info("%d hinted records are not at the provider now: left to the sweep", len(gone))
    now = ctx.clock.now()
    with ctx.writing() as s:
        report.changed += store_them(s, found)
        if ctx.dry_run:
            s.rollback()
            report.fetched += len(got)
            return
        mark_done(s, [r.id for r in rows], "done", now)  # with the records they asked for
    report.fetched += len(got)
    report.gone += len(gone)


# --- the jobs' side -----------------------------------------------------------------------------


def before_poll(ctx: JobContext, streams: Sequence[str], report: PushReport) -> dict[str, Cadence]:
    """At a pull's start: apply what was pushed, and tell which streams this run polls."""
    now = ctx.clock.now()
    with ctx.store.read_session() as s:
        modes = {stream: cadence(s, ctx.connection, stream, now) for stream in streams}
    if not ctx.dry_run:
        report.unfollowed = _close_unfollowed(ctx.store, ctx.connection.id, now)
    report.modes = {stream: mode.describe(now) for stream, mode in modes.items()}
    if set(streams) & set(PRODUCT_STREAMS):
        apply_products(ctx, report)
    if set(streams) & set(CUSTOMER_STREAMS):
        apply_customers(ctx, report)
    return modes


def after_poll(ctx: JobContext, stream: str, started: datetime, report: PushReport) -> None:
    """A whole poll of ``stream`` ran from ``started``: it read every hint received before."""
    if ctx.dry_run:
        return
    with ctx.writing() as s:
        mark_polled(s, ctx.connection.id, stream, started, ctx.clock.now())
        report.covered += hints_covered(s, ctx.connection.id, [stream], started, ctx.clock.now())


# --- outside a job (``webhooks apply``, the receiver after it stored deliveries) -----------------


def _close_unfollowed(store: Store, connection_id: int, now: datetime) -> int:
    """Close what no job applies; the write lock only when there is something (every pull and
    every `webhooks apply` asks, the receiver's inserts wait behind the lock on SQLite)."""
    with store.read_session() as s:
        if not any_unfollowed(s, connection_id, FOLLOWED):
            return 0
    with store.session() as s:
        return close_unfollowed(s, connection_id, FOLLOWED, now)


def apply_connection(
    store: Store,
    conn: Connection,
    clock: Clock | None = None,
    connector_factory: Callable[[JobContext], Connector] | None = None,
    hints: bool | None = None,
    dry_run: bool = False,
) -> PushReport:
    """Apply the connection's pending deliveries that carry their record: no API call. With
    ``hints``, also fetch the ids delivered without a record (batched calls, as a pull does);
    None: as the connection's ``hint_wait`` says (once the oldest has waited that long; unset:
    never here, the next pull does). Each stream's job lease is held for the moment it takes;
    where a job holds it, that job applies them (``busy``). A dry run says what the first batch
    of each stream would do and writes nothing (no lease either, as a job's dry run)."""
    clock = clock or SystemClock()
    report = PushReport()
    if not dry_run:
        report.unfollowed = _close_unfollowed(store, conn.id, clock.now())
    if hints is None:
        with store.read_session() as s:
            hints, report.hints_in = hints_due(s, conn, clock.now())
    owner = f"{owner_id()}:push:{uuid.uuid4().hex[:8]}"[-100:]
    for job in (Job.PULL_PRODUCTS, Job.LINK_CUSTOMERS):
        streams = PRODUCT_STREAMS if job == Job.PULL_PRODUCTS else CUSTOMER_STREAMS
        with store.read_session() as s:  # no write lock to find nothing to do
            waiting = events_in(s, conn.id, streams, "pending", 1) or (
                hints and events_in(s, conn.id, streams, "hint", 1)
            )
        if not waiting:
            continue
        try:
            if not dry_run:
                acquire_lease(store, job, conn.id, clock.now(), APPLY_LEASE, owner)
        except LeaseBusy:
            report.busy = True
            continue
        hold = None if dry_run else _Hold(store, job, conn.id, owner, clock, clock.now())
        try:
            ctx = _Applying(
                store, conn, clock, dry_run=dry_run, connector_factory=connector_factory, hold=hold
            )
            _apply_job(ctx, job, report, hints)
        except LeaseLost:
            # stalled past the lease, which another (an applier, the job) holds now: it
            # applies what is left, and nothing more was written here
            log.warning("%s: the %s lease was taken over while applying: stopped", conn.name, job)
            report.busy = True
        finally:
            if not dry_run:
                release_lease(store, job, conn.id, owner)
    return report


def _apply_job(ctx: JobContext, job: Job, report: PushReport, hints: bool) -> None:
    if job == Job.PULL_PRODUCTS:
        apply_products(ctx, report)
        if hints:
            fetch_product_hints(ctx, report, PRODUCT_STREAMS)
    else:
        apply_customers(ctx, report)
        if hints:
            fetch_customer_hints(ctx, report)
