"""Customers are linked, never copied: ``link-customers``, ``ensure_customer`` (sale time) and the
review the merchant works through.

Rules (docs/design.md §2, anchors §7.4-7.5):

- A remote customer is matched to an UNLINKED local customer of the same connection by email
  (lower-case, surrounding whitespace stripped) or by account number / customer code (surrounding
  whitespace stripped, case ignored). Exactly one candidate on both sides: link. Several
  candidates in either direction (one remote customer matching two local ones, or one local
  customer matching two remote ones): a review item ``ambiguous_customer`` and no link; we never
  guess. No candidate: nothing.
- Neither job ever writes a customer field, on either side: link-customers reads the provider and
  writes only links, review items, the cursor and the seen-customers cache; ensure_customer may
  *create* a customer (remote, and a local row from the order) but never updates one.
- Archived (inactive) remote customers are neither link targets nor rivals.
- A link made earlier in the same run is undone when a later page brings a second remote customer
  for the same local one (pages arrive in time order, so the rival may come later). Links from
  earlier runs are kept: a new remote duplicate of a linked customer shows in the duplicates list
  of ``customers review`` instead.

The seen-customers cache: every remote customer link-customers reads (and every one
ensure_customer creates) is remembered, name/email/account/active only, in ``remote_customers``.
It lets matching see rivals read by earlier runs, and lets ``customers review`` find duplicate
remote customers without spending a call.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NoReturn

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from synccli.clock import (
    parse_since,  # noqa: F401 - re-exported for the CLI
)
from synccli.connectors.base import NewCustomer, RemoteCustomer
from synccli.errors import ClaimLost, Rejected, UsageError
from synccli.remote_ids import refusal
from synccli.store.customers import (
    customers_by_account,
    customers_by_bare_name,
    customers_by_email,
    customers_by_email_or_account,
    customers_with_links,
    open_review_items,
    review_items_by_id,
    seen_by_id,
    seen_customer,
    seen_customers,
    serialise_new_customers,
    unlinked_customers,
)
from synccli.store.db import Store
from synccli.store.models import Connection, Customer, Link, Order, ReviewItem
from synccli.store.models import RemoteCustomer as RemoteCustomerRow
from synccli.store.sync_state import (
    add_link,
    add_review,
    delete_link,
    link_by_local,
    link_by_remote,
    linked_local_ids,
    links_by_remote,
)
from synccli.sync.context import JobContext, creation_lock
from synccli.sync.duplicates import DuplicatePair, Person, find_duplicates
from synccli.sync.jobs import Job
from synccli.sync.stream import Batch, CursorStream

log = logging.getLogger("synccli.customers")

JOB = Job.LINK_CUSTOMERS
STREAM = "customers"
KIND = "customer"
AMBIGUOUS = "ambiguous_customer"
CREATED = "created_customer"
# A create the provider may have done (its answer was lost) of a customer it cannot look up:
# shown with the ambiguous ones, settled by `customers link` or by resolving it.
UNANSWERED = "customer_create_unanswered"
DRY_RUN_REMOTE_ID = "(would create)"  # what ensure_customer returns for a new customer in a dry run
_REVIEW_IN_REPORT = 50  # ambiguous items listed in a report (all are in the review table)


# --- normalisation -----------------------------------------------------------------------------
def norm_email(value: str | None) -> str | None:
    """The matching form of an email: lower-case, surrounding whitespace stripped."""
    text = (value or "").strip().lower()
    return text or None


def norm_account(value: str | None) -> str | None:
    """The matching form of an account number / customer code: stripped, case ignored."""
    text = (value or "").strip().casefold()
    return text or None


# --- the seen-customers cache --------------------------------------------------------------------
def _seen_detail(r: RemoteCustomer) -> dict[str, Any]:
    return {
        "name": r.name,
        "email": r.email,
        "account": r.account_number,
        "active": r.active,
        "updated_at": r.updated_at.isoformat() if r.updated_at else None,
    }


def load_seen(s: Session, connection_id: int) -> dict[str, dict[str, Any]]:
    """Every remote customer link-customers has seen: remote id -> name/email/account/active."""
    return {row.remote_id: _row_detail(row) for row in seen_customers(s, connection_id)}


def _row_detail(row: RemoteCustomerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "email": row.email,
        "account": row.account_number,
        "active": row.active,
        "updated_at": row.remote_updated_at.isoformat() if row.remote_updated_at else None,
    }


def save_seen(s: Session, connection_id: int, records: list[RemoteCustomer], now: datetime) -> None:
    by_id = {r.remote_id: r for r in records}
    existing = seen_by_id(s, connection_id, list(by_id))
    for rid, r in by_id.items():
        row = existing.get(rid)
        if row is None:
            row = RemoteCustomerRow(connection_id=connection_id, remote_id=rid, seen_at=now)
            s.add(row)
        row.name, row.email, row.account_number = r.name, r.email, r.account_number
        row.active, row.remote_updated_at, row.seen_at = r.active, r.updated_at, now


def _flag(
    s: Session, connection_id: int, kind: str, subject: str, detail: dict[str, Any], now: datetime
) -> ReviewItem:
    """A review item, re-opened when it had been resolved."""
    item = add_review(s, connection_id, kind, subject, detail, now)
    item.resolved_at = None
    return item


def _resolve(
    s: Session,
    connection_id: int,
    subjects: Iterable[str],
    now: datetime,
    kinds: tuple[str, ...] = (AMBIGUOUS, UNANSWERED),
) -> int:
    subjects = list(subjects)
    if not subjects:
        return 0
    items = open_review_items(s, connection_id, kinds, subjects)
    for item in items:
        item.resolved_at = now
    return len(items)


# --- link-customers ------------------------------------------------------------------------------
@dataclass
class LinkReport:
    pages: int = 0
    seen: int = 0  # remote records read (the overlap may bring some twice)
    linked: int = 0  # links made by this run (net of links undone by a later rival)
    ambiguous: int = 0  # review items raised: several candidates, no link
    calls: int = 0
    already_linked: int = 0  # remote records whose link exists
    unmatched: int = 0  # active, unlinked remote records no local customer matches
    inactive: int = 0  # archived remote records (never linked)
    unlinked_rivals: int = 0  # links of this run undone because a rival came later
    raced: int = 0  # matches another process linked first (left as they are)
    since: str | None = None
    cursor: str | dict[str, int] | None = None  # ISO, or {"version": N} (version_stamps)
    dry_run: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    would_link: list[dict[str, Any]] = field(default_factory=list)  # dry run only
    review: list[dict[str, Any]] = field(default_factory=list)  # the ambiguous items raised
    # pushed changes (webhooks) this run applied, fetched and closed, and the stream's mode
    push: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Local:
    id: int
    name: str
    email: str | None
    account: str | None

    @property
    def keys(self) -> list[tuple[str, str]]:
        return _keys(self.email, self.account)


@dataclass
class _Remote:
    id: str
    name: str
    email: str | None
    account: str | None
    active: bool
    updated_at: datetime | None = None
    others: tuple[str, ...] = ()  # further codes (Xero's ContactNumber)

    @property
    def keys(self) -> list[tuple[str, str]]:
        keys = _keys(self.email, self.account)
        for code in self.others:
            if (a := norm_account(code)) is not None and ("account", a) not in keys:
                keys.append(("account", a))
        return keys


def _keys(email: str | None, account: str | None) -> list[tuple[str, str]]:
    out = []
    if (e := norm_email(email)) is not None:
        out.append(("email", e))
    if (a := norm_account(account)) is not None:
        out.append(("account", a))
    return out


class _Matcher:
    """In-memory view of both sides for one run: the unlinked local customers (as they were when
    the run started), every remote customer known (cache + this run's pages), and the links."""

    def __init__(self, locals_: list[_Local], links: list[Link], seen: dict[str, dict[str, Any]]):
        self.locals = {c.id: c for c in locals_}
        self.local_keys: dict[tuple[str, str], set[int]] = defaultdict(set)
        for c in locals_:
            for k in c.keys:
                self.local_keys[k].add(c.id)
        self.remote_owner: dict[str, int] = {ln.remote_id: ln.local_id for ln in links}
        self.run_links: dict[int, str] = {}  # local id -> remote id, links made by this run
        self.raced: set[int] = set()  # local ids linked by another process during this run
        self.remotes: dict[str, _Remote] = {}
        self.remote_keys: dict[tuple[str, str], set[str]] = defaultdict(set)
        for rid, d in seen.items():
            self.observe(
                _Remote(
                    rid,
                    d.get("name") or "",
                    d.get("email"),
                    d.get("account"),
                    bool(d.get("active", True)),
                )
            )

    def observe(self, r: _Remote) -> set[tuple[str, str]]:
        """Remember ``r``; returns its keys before and after (both may concern local customers)."""
        old = self.remotes.get(r.id)
        touched: set[tuple[str, str]] = set(r.keys)
        if old is not None:
            for k in old.keys:
                self.remote_keys[k].discard(r.id)
                touched.add(k)
        self.remotes[r.id] = r
        if r.active:
            for k in r.keys:
                self.remote_keys[k].add(r.id)
        return touched

    def locals_for_keys(self, keys: Iterable[tuple[str, str]]) -> set[int]:
        out: set[int] = set()
        for k in keys:
            out |= self.local_keys.get(k, set())
        return out

    def candidates_of_local(self, local_id: int) -> set[str]:
        """Active remote customers matching the local one and not bound to another local one."""
        out: set[str] = set()
        for k in self.locals[local_id].keys:
            for rid in self.remote_keys.get(k, ()):
                owner = self.remote_owner.get(rid)
                if owner is None or owner == local_id:
                    out.add(rid)
        return out

    def candidates_of_remote(self, remote_id: str) -> set[int]:
        """Local customers (unlinked, or linked to this very remote) that match it."""
        out: set[int] = set()
        for lid in self.locals_for_keys(self.remotes[remote_id].keys):
            bound = self.run_links.get(lid)
            if bound is None or bound == remote_id:
                out.add(lid)
        return out

    def linked_before(self, remote_id: str) -> bool:
        """Whether the remote customer was linked before this run."""
        owner = self.remote_owner.get(remote_id)
        return owner is not None and self.run_links.get(owner) != remote_id

    def link(self, local_id: int, remote_id: str) -> None:
        self.run_links[local_id] = remote_id
        self.remote_owner[remote_id] = local_id

    def unlink(self, local_id: int) -> str:
        remote_id = self.run_links.pop(local_id)
        self.remote_owner.pop(remote_id, None)
        return remote_id


def _local_view(c: _Local) -> dict[str, Any]:
    return {"local_id": c.id, "name": c.name, "email": c.email, "account_number": c.account}


def _remote_view(r: _Remote) -> dict[str, Any]:
    return {"remote_id": r.id, "name": r.name, "email": r.email, "account_number": r.account}


def _load_unlinked(s: Session, connection_id: int) -> list[_Local]:
    return [_Local(*row) for row in unlinked_customers(s, connection_id, KIND)]


def link_customers(
    ctx: JobContext,
    since: datetime | None = None,
    on_page: Callable[[LinkReport], None] | None = None,
) -> LinkReport:
    """Link remote customers changed since the cursor (or ``since``) to unlinked local ones.

    Each page is applied and committed together with the cursor it allows (``Page.cursor``; the
    cursor never passes the run's start), so a crash loses at most the page in flight. Writes
    links, review items and the seen-customers cache only; never a customer field.
    """
    from synccli.sync import push

    started = time.perf_counter()
    report = LinkReport(dry_run=ctx.dry_run)
    ctx.counts = report  # partial counts reach the run row if the run stops half-way
    conn_id = ctx.connection.id
    stream: CursorStream[RemoteCustomer] = CursorStream(ctx, STREAM, since)
    # pushed customers first (no call); while their deliveries are healthy the listing is read
    # only every safety_poll, and the hinted ids are fetched instead (sync/push.py)
    pushed = push.PushReport()
    polling = push.before_poll(ctx, push.CUSTOMER_STREAMS, pushed)[STREAM].due or bool(since)
    # hints a look-up by id cannot take, or only in more calls than the listing: it reads them
    polling = polling or push.hints_cost_more(ctx, push.CUSTOMER_STREAMS)
    with ctx.store.session() as s:
        links = list(links_by_remote(s, conn_id, KIND).values())
        matcher = _Matcher(_load_unlinked(s, conn_id), links, load_seen(s, conn_id))
    report.since = stream.start.isoformat() if stream.start else None
    flagged: dict[str, dict[str, Any]] = {}

    def counted(batch: Batch[RemoteCustomer]) -> None:
        report.pages += len(batch.pages)
        report.seen += len(batch.records)
        for page in batch.pages:
            report.errors.extend(page.errors)

    def apply(s: Session, batch: Batch[RemoteCustomer]) -> None:
        _apply_page(ctx, s, matcher, batch.records, report, flagged, batch.now)
        if not ctx.dry_run:
            save_seen(s, conn_id, batch.records, batch.now)

    if polling:
        stream.read(
            ctx.connector.changed_customers,
            apply,
            counted=counted,
            applied=(lambda: on_page(report)) if on_page is not None else None,
        )
    # Local customers added since their remote twin was last listed: matched against every
    # remote customer seen before (the cache), not only this run's pages; no call is made.
    done = set(matcher.run_links) | matcher.raced
    waiting = {lid for lid in matcher.locals if lid not in done}
    waiting = {lid for lid in waiting if matcher.candidates_of_local(lid)}
    if waiting:
        with ctx.writing() as s:
            _apply_page(ctx, s, matcher, [], report, flagged, ctx.clock.now(), waiting)
            if ctx.dry_run:
                s.rollback()
    if polling:
        cursor = stream.advance()
        push.after_poll(ctx, STREAM, stream.run_start, pushed)
        push.apply_customers(ctx, pushed)  # delivered while the listing was read
        shown = ctx.connector.capabilities.shown_stamp(cursor)
        report.cursor = shown.isoformat() if isinstance(shown, datetime) else shown
    else:
        push.fetch_customer_hints(ctx, pushed)
    report.push = pushed.summary()
    report.ambiguous = len(flagged)
    report.review = list(flagged.values())[:_REVIEW_IN_REPORT]
    report.calls = ctx.calls
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _apply_page(
    ctx: JobContext,
    s: Session,
    m: _Matcher,
    records: list[RemoteCustomer],
    report: LinkReport,
    flagged: dict[str, dict[str, Any]],
    now: datetime,
    also: set[int] | None = None,
) -> None:
    """Observe ``records`` and decide every unlinked local customer they concern (and those in
    ``also``)."""
    touched = sorted(m.locals_for_keys(_observe(m, records, report)) | (also or set()))
    page = _PageDecisions(ctx, s, m, report, flagged, now)
    # 1. a link of this run whose local customer now has a rival: undo it, do not guess.
    for lid in touched:
        if lid in m.run_links and len(m.candidates_of_local(lid)) > 1:
            page.undo(lid)
    # 2. decide every touched local customer that is still unlinked.
    for lid in touched:
        if lid not in m.run_links:
            page.decide(lid)


def _observe(
    m: _Matcher, records: list[RemoteCustomer], report: LinkReport
) -> set[tuple[str, str]]:
    """Remember ``records`` in the matcher and count them; answers the keys they touched."""
    touched_keys: set[tuple[str, str]] = set()
    for rec in records:
        r = _Remote(
            rec.remote_id,
            rec.name,
            rec.email,
            rec.account_number,
            rec.active,
            rec.updated_at,
            rec.other_codes,
        )
        touched_keys |= m.observe(r)
        if not rec.active:
            report.inactive += 1
        elif m.linked_before(rec.remote_id):
            report.already_linked += 1
        elif not m.locals_for_keys(r.keys):
            report.unmatched += 1
    return touched_keys


@dataclass
class _PageDecisions:
    """The decisions about the local customers one page concerns, in that page's session."""

    ctx: JobContext
    s: Session
    m: _Matcher
    report: LinkReport
    flagged: dict[str, dict[str, Any]]
    now: datetime

    def flag(self, subject: str, detail: dict[str, Any]) -> None:
        self.flagged[subject] = {"subject": subject, **detail}
        if not self.ctx.dry_run:
            _flag(self.s, self.ctx.connection.id, AMBIGUOUS, subject, detail, self.now)

    def undo(self, lid: int) -> None:
        """Undo this run's link of local customer ``lid`` (a rival came)."""
        rid = self.m.unlink(lid)
        report = self.report
        report.linked -= 1
        report.unlinked_rivals += 1
        if self.ctx.dry_run:
            report.would_link = [w for w in report.would_link if w["local_id"] != lid]
            return
        link = link_by_local(self.s, self.ctx.connection.id, KIND, lid)
        if link is not None and link.remote_id == rid:
            self.s.delete(link)
            self.s.flush()

    def decide(self, lid: int) -> None:
        """Link local customer ``lid`` to its one match, flag it when there are several."""
        m = self.m
        local = m.locals[lid]
        rivals = m.candidates_of_local(lid)
        if len(rivals) > 1:
            self.flag(
                f"local:{lid}",
                {
                    "reason": "several remote customers match this local customer",
                    "local": _local_view(local),
                    "candidates": [_remote_view(m.remotes[r]) for r in sorted(rivals)],
                },
            )
            return
        if not rivals:
            return
        (rid,) = rivals
        locals_ = m.candidates_of_remote(rid)
        if locals_ != {lid}:
            self.flag(
                f"remote:{rid}",
                {
                    "reason": "several local customers match this remote customer",
                    "remote": _remote_view(m.remotes[rid]),
                    "candidates": [_local_view(m.locals[x]) for x in sorted(locals_)],
                },
            )
            return
        self.link(local, m.remotes[rid])

    def link(self, local: _Local, remote: _Remote) -> None:
        lid, rid = local.id, remote.id
        report, conn_id = self.report, self.ctx.connection.id
        if not self.ctx.dry_run:
            try:
                with self.s.begin_nested():  # a savepoint: a concurrent link must not sink the page
                    add_link(
                        self.s,
                        conn_id,
                        KIND,
                        lid,
                        rid,
                        self.now,
                        origin="matched",
                        remote_code=remote.account or remote.email,
                        remote_updated_at=remote.updated_at,
                    )
            except IntegrityError:  # ensure_customer (or a person) linked one of them meanwhile
                report.raced += 1
                self.m.raced.add(lid)
                return
            _resolve(self.s, conn_id, [f"local:{lid}", f"remote:{rid}"], self.now)
        self.m.link(lid, rid)
        report.linked += 1
        self.flagged.pop(f"local:{lid}", None)
        self.flagged.pop(f"remote:{rid}", None)
        if self.ctx.dry_run:
            shared = set(local.keys) & set(remote.keys)
            report.would_link.append(
                {
                    "local_id": lid,
                    "remote_id": rid,
                    "by": "email" if any(k[0] == "email" for k in shared) else "account",
                    "name": local.name,
                    "remote_name": remote.name,
                }
            )


# --- ensure_customer (sale time) -----------------------------------------------------------------
def ensure_customer(ctx: JobContext, order: Order) -> str:
    """The remote customer id to invoice ``order`` to: linked, found, or created (once).

    1. The order's local customer: ``order.customer_id``; when None, found by the order's email,
       then account number, then (only when it has neither) its exact name among local customers
       without email and account; else created as a LOCAL row (the order row is not modified).
    2. Linked -> the link's remote id (no call).
    3. Else looked up remotely by email and account number (``find_customers``, 1-2 calls).
       Exactly one active customer, not linked to another local one -> linked (origin
       "matched"), committed, returned.
    4. Several (or the only one is bound to another local customer, or archived) -> a review
       item ``ambiguous_customer`` and :class:`~synccli.errors.Rejected` naming them: we never
       pick one, the merchant links the right one (``synccli customers link LOCAL REMOTE``) and the
       invoice goes out on its next retry. Rejected is what post-invoices already treats as
       "tell the merchant, retry on the slow schedule".
    5. None -> ``create_customer`` (the connector makes the name acceptable), then at once, in
       one commit, the link (origin "created") and a review item ``created_customer``: a crash
       after that cannot create it twice, and a second order of the same customer finds the link.

    Never updates a remote customer. Call it outside any open write transaction (on SQLite the
    store has one writer). Concurrent calls for one customer (several hosts draining one queue)
    are serialised by a lease row per local customer, and the creation of a new local customer by
    the write lock (SQLite) or an advisory lock (PostgreSQL). In a dry run nothing is written and
    a customer that would be created comes back as ``DRY_RUN_REMOTE_ID``.
    """
    store, conn_id = ctx.store, ctx.connection.id
    local = _order_customer(ctx, order)
    if local.remote_id is not None:
        return local.remote_id
    with creation_lock(ctx, "customer", f"#{local.id}"):
        if local.id is not None:
            with store.session() as s:
                link = link_by_local(s, conn_id, KIND, local.id)
            if link is not None:  # another worker got there while we waited
                return link.remote_id
        return _find_or_create_remote(ctx, order, local)


@dataclass
class _OrderCustomer:
    id: int | None  # None only in a dry run that would create the local row
    name: str
    email: str | None
    account: str | None
    first_name: str | None
    last_name: str | None
    remote_id: str | None = None  # set when already linked


def _order_customer(ctx: JobContext, order: Order) -> _OrderCustomer:
    conn_id = ctx.connection.id
    store = ctx.store
    with store.session() as s:  # the common case: found (and usually linked), a plain read
        cust = _find_local(s, conn_id, order)
        if cust is not None:
            return _view(s, conn_id, cust, order)
    if ctx.dry_run:
        return _view(None, conn_id, _new_local(ctx, order), order)
    with store.locked() as s:  # SQLite: the write lock; PostgreSQL: an advisory lock
        serialise_new_customers(s, conn_id)
        cust = _find_local(s, conn_id, order)  # again, now that nobody else can create it
        if cust is None:
            cust = _new_local(ctx, order)
            s.add(cust)
            s.flush()
            log.info("order %s: local customer #%s created from the order", order.number, cust.id)
        return _view(s, conn_id, cust, order)


def _new_local(ctx: JobContext, order: Order) -> Customer:
    name = (
        (order.customer_name or "").strip()
        or (order.customer_email or "").strip()
        or (order.customer_account or "").strip()
    )
    if not name:
        raise Rejected(
            f"order {order.number} names no customer (no id, email, account number or name)"
        )
    first, _, last = (order.customer_name or "").strip().partition(" ")
    return Customer(
        connection_id=ctx.connection.id,
        name=name[:255],
        email=(order.customer_email or "").strip() or None,
        account_number=(order.customer_account or "").strip() or None,
        first_name=first or None,
        last_name=last.strip() or None,
        created_at=ctx.clock.now(),
    )


def _view(s: Session | None, conn_id: int, cust: Customer, order: Order) -> _OrderCustomer:
    link = link_by_local(s, conn_id, KIND, cust.id) if s is not None and cust.id else None
    return _OrderCustomer(
        cust.id,
        cust.name,
        cust.email or order.customer_email,
        cust.account_number or order.customer_account,
        cust.first_name,
        cust.last_name,
        link.remote_id if link is not None else None,
    )


def _find_local(s: Session, conn_id: int, order: Order) -> Customer | None:
    if order.customer_id is not None:
        cust = s.get(Customer, order.customer_id)
        if cust is None or cust.connection_id != conn_id:
            raise Rejected(
                f"order {order.number}: its customer #{order.customer_id} is not a "
                "customer of this connection"
            )
        return cust

    def best(rows: list[Customer]) -> Customer | None:  # a linked one first, then the oldest
        if not rows:
            return None
        bound = linked_local_ids(s, conn_id, KIND, [c.id for c in rows])
        return next((c for c in rows if c.id in bound), rows[0])

    email = norm_email(order.customer_email)
    if email:
        found = best(customers_by_email(s, conn_id, email))
        if found is not None:
            return found
    account = norm_account(order.customer_account)
    if account:
        found = best(customers_by_account(s, conn_id, account))
        if found is not None:
            return found
    name = (order.customer_name or "").strip()
    if name and not email and not account:
        return best(customers_by_bare_name(s, conn_id, name))
    return None


def _find_or_create_remote(ctx: JobContext, order: Order, c: _OrderCustomer) -> str:
    store, conn_id = ctx.store, ctx.connection.id
    connector = ctx.connector
    email = (c.email or "").strip() or None
    account = (c.account or "").strip() or None
    found = connector.find_customers(email=email, account=account) if (email or account) else []
    with store.session() as s:
        owners = {}
        for r in found:
            link = link_by_remote(s, conn_id, KIND, r.remote_id)
            if link is not None:
                owners[r.remote_id] = link.local_id
    active = [r for r in found if r.active]
    free = [r for r in active if r.remote_id not in owners]
    who = _describe(c)
    if len(free) == 1 and len(active) == 1:
        return _link_found(ctx, order, c, free[0], who)
    if found:
        _refuse_found(ctx, order, c, found, owners, who)
    return _create_remote(ctx, order, c, email, account, who)


def _link_found(
    ctx: JobContext, order: Order, c: _OrderCustomer, remote: RemoteCustomer, who: str
) -> str:
    """The provider's one active customer that matches, free: linked (unless a dry run)."""
    store, conn_id = ctx.store, ctx.connection.id
    if ctx.dry_run or c.id is None:
        return remote.remote_id
    try:
        with store.session() as s:
            add_link(
                s,
                conn_id,
                KIND,
                c.id,
                remote.remote_id,
                ctx.clock.now(),
                origin="matched",
                remote_code=remote.account_number or remote.email,
                remote_updated_at=remote.updated_at,
            )
            _resolve(s, conn_id, [f"local:{c.id}", f"remote:{remote.remote_id}"], ctx.clock.now())
    except IntegrityError:
        return _after_race(ctx, c, order)
    log.info("order %s: %s matched remote customer %s", order.number, who, remote.remote_id)
    return remote.remote_id


def _refuse_found(
    ctx: JobContext,
    order: Order,
    c: _OrderCustomer,
    found: list[RemoteCustomer],
    owners: dict[str, int],
    who: str,
) -> NoReturn:
    """The provider has customers that match, but not one we may link: flagged for the merchant
    and refused (Rejected), never guessed."""
    store, conn_id = ctx.store, ctx.connection.id
    provider = ctx.connection.provider
    active = [r for r in found if r.active]
    if len(active) > 1:
        why = f"matches {len(active)} customers at {provider}"
    elif not active:
        why = f"matches only archived customers at {provider}"
    else:
        why = (
            f"matches {provider} customer {active[0].remote_id}, which is linked to local "
            f"customer #{owners[active[0].remote_id]}"
        )
    ids = ", ".join(f"{r.remote_id} ({r.name})" for r in found)
    message = (
        f"order {order.number}: customer {who} {why} ({ids}); link the right one with "
        f"`synccli customers link -c {ctx.connection.name} "
        f"{c.id if c.id is not None else 'LOCAL'} REMOTE_ID`"
    )
    if not ctx.dry_run and c.id is not None:
        with store.session() as s:
            _flag(
                s,
                conn_id,
                AMBIGUOUS,
                f"local:{c.id}",
                {
                    "reason": why,
                    "order": order.number,
                    "local": {
                        "local_id": c.id,
                        "name": c.name,
                        "email": c.email,
                        "account_number": c.account,
                    },
                    "candidates": [
                        {
                            "remote_id": r.remote_id,
                            "name": r.name,
                            "email": r.email,
                            "account_number": r.account_number,
                            "active": r.active,
                            "linked_to": owners.get(r.remote_id),
                        }
                        for r in found
                    ],
                },
                ctx.clock.now(),
            )
    raise Rejected(message)


def _create_remote(
    ctx: JobContext,
    order: Order,
    c: _OrderCustomer,
    email: str | None,
    account: str | None,
    who: str,
) -> str:
    """No customer at the provider matches: created there, then linked in the same breath."""
    store, conn_id = ctx.store, ctx.connection.id
    connector = ctx.connector
    if ctx.dry_run or c.id is None:
        return DRY_RUN_REMOTE_ID
    new = _new_customer(c, email, account)
    unanswered = None if connector.refinds_customer(email, account) else f"local:{c.id}"
    if unanswered is not None:
        _before_blind_create(ctx, order, c, who, unanswered)
    try:
        remote = connector.create_customer(new)
    except Rejected:  # refused: nothing was created, nothing to wonder about
        if unanswered is not None:
            with store.session() as s:
                _resolve(s, conn_id, [unanswered], ctx.clock.now(), kinds=(UNANSWERED,))
        raise
    return _record_created(ctx, order, c, remote, who, unanswered)


def _new_customer(c: _OrderCustomer, email: str | None, account: str | None) -> NewCustomer:
    first, last = c.first_name, c.last_name
    if not (first or last):
        first, _, rest = c.name.partition(" ")
        last = rest or None
    return NewCustomer(
        name=c.name, email=email, account_number=account, first_name=first, last_name=last
    )


def _record_created(
    ctx: JobContext,
    order: Order,
    c: _OrderCustomer,
    remote: RemoteCustomer,
    who: str,
    unanswered: str | None = None,
) -> str:
    """The provider created the customer: link it (origin "created") with a review item, at
    once, so nothing later can make us create it again."""
    store, conn_id = ctx.store, ctx.connection.id
    provider = ctx.connection.provider
    why = refusal(f"new customer {who}", remote.remote_id)
    if why:  # nothing to link to: the order waits, the merchant hears
        raise Rejected(f"order {order.number}: {why}")
    assert c.id is not None
    now = ctx.clock.now()
    # OCA: commit right after the remote create, so nothing later can make us create it again.
    with store.session() as s:
        add_link(
            s,
            conn_id,
            KIND,
            c.id,
            remote.remote_id,
            now,
            origin="created",
            remote_code=remote.account_number or remote.email,
            remote_updated_at=remote.updated_at,
        )
        add_review(
            s,
            conn_id,
            CREATED,
            f"local:{c.id}",
            {
                "reason": f"created at {provider} when order {order.number} was posted",
                "order": order.number,
                "local": {
                    "local_id": c.id,
                    "name": c.name,
                    "email": c.email,
                    "account_number": c.account,
                },
                "remote": {
                    "remote_id": remote.remote_id,
                    "name": remote.name,
                    "email": remote.email,
                    "account_number": remote.account_number,
                },
            },
            now,
        )
        save_seen(s, conn_id, [remote], now)
        if unanswered is not None:
            _resolve(s, conn_id, [unanswered], now, kinds=(UNANSWERED,))
    log.info(
        "order %s: created %s customer %s for %s", order.number, provider, remote.remote_id, who
    )
    return remote.remote_id


# --- several orders at once (post-invoices, where the provider takes batches) -------------------
Outcome = str | Exception  # a remote id, or what refused or failed for that customer


def ensure_customers(ctx: JobContext, orders: list[Order]) -> dict[int, Outcome]:
    """:func:`ensure_customer` for the orders of one post-invoices run at once: the customers that
    are not linked are looked up together (``find_customers_many``: one call at Xero) and those
    the provider lacks created together (``create_customers``), each decided by the same rules
    as one alone. Returns an outcome per order id; an order left out (its customer cannot be
    looked up by email or account, or a write found a claim lost) goes the one-by-one way.
    The creation locks of every customer are held across the look-up and the creates."""
    out: dict[int, Outcome] = {}
    views: dict[int, tuple[_OrderCustomer, Order]] = {}
    members: dict[int, list[int]] = defaultdict(list)
    for order in orders:
        try:
            c = _order_customer(ctx, order)
        except Exception as err:  # refused or failed: that order's outcome
            out[order.id] = err
            continue
        if c.remote_id is not None:
            out[order.id] = c.remote_id
            continue
        email, account = (c.email or "").strip() or None, (c.account or "").strip() or None
        if c.id is None or not (email or account):
            continue
        if not ctx.connector.refinds_customer(email, account):
            continue
        views.setdefault(c.id, (c, order))
        members[c.id].append(order.id)
    if not views:
        return out
    with ExitStack() as locks:
        for cid in sorted(views):
            locks.enter_context(creation_lock(ctx, "customer", f"#{cid}"))
        results = _look_up_and_create(ctx, views)
    for cid, ids in members.items():
        if cid in results:
            out.update(dict.fromkeys(ids, results[cid]))
    return out


def _outcome(step: Callable[[], str]) -> Outcome:
    try:
        return step()
    except ClaimLost:
        raise
    except Exception as err:
        return err


def _look_up_and_create(
    ctx: JobContext, views: dict[int, tuple[_OrderCustomer, Order]]
) -> dict[int, Outcome]:
    """Under the customers' creation locks: linked meanwhile -> that link; else one look-up of
    them all, then one create of those the provider lacks."""
    conn_id = ctx.connection.id
    results: dict[int, Outcome] = {}
    with ctx.store.session() as s:
        for cid in views:
            link = link_by_local(s, conn_id, KIND, cid)
            if link is not None:  # another worker got there while we waited
                results[cid] = link.remote_id
    todo = [cid for cid in sorted(views) if cid not in results]
    keys = [_lookup_keys(views[cid][0]) for cid in todo]
    try:
        found = ctx.connector.find_customers_many(keys) if todo else []
    except Exception as err:  # the look-up failed: so did each customer of it
        return {**results, **dict.fromkeys(todo, err)}
    create: list[int] = []
    for cid, matches in zip(todo, found, strict=True):
        c, order = views[cid]
        if isinstance(matches, Rejected):
            results[cid] = matches
            continue
        decided = _decide(ctx, order, c, matches)
        if decided is None:
            create.append(cid)
        else:
            results[cid] = decided
    if create:
        results.update(_create_all(ctx, views, create))
    return results


def _lookup_keys(c: _OrderCustomer) -> tuple[str | None, str | None]:
    return (c.email or "").strip() or None, (c.account or "").strip() or None


def _decide(
    ctx: JobContext, order: Order, c: _OrderCustomer, found: list[RemoteCustomer]
) -> Outcome | None:
    """What the look-up's matches mean for one customer (as ``_find_or_create_remote``): linked,
    refused, or None when nothing matches and it is to be created."""
    with ctx.store.session() as s:
        owners = {}
        for r in found:
            link = link_by_remote(s, ctx.connection.id, KIND, r.remote_id)
            if link is not None:
                owners[r.remote_id] = link.local_id
    active = [r for r in found if r.active]
    free = [r for r in active if r.remote_id not in owners]
    who = _describe(c)
    if len(free) == 1 and len(active) == 1:
        return _outcome(lambda: _link_found(ctx, order, c, free[0], who))
    if found:
        return _outcome(lambda: _refuse_found(ctx, order, c, found, owners, who))
    return None


def _create_all(
    ctx: JobContext, views: dict[int, tuple[_OrderCustomer, Order]], cids: list[int]
) -> dict[int, Outcome]:
    news = [_new_customer(views[cid][0], *_lookup_keys(views[cid][0])) for cid in cids]
    try:
        made = ctx.connector.create_customers(news)
    except ClaimLost:
        return {}  # nothing was sent: each goes the one-by-one way, under its own claim
    except Exception as err:
        return dict.fromkeys(cids, err)
    results: dict[int, Outcome] = {}
    for cid, remote in zip(cids, made, strict=True):
        c, order = views[cid]
        if isinstance(remote, Rejected):
            results[cid] = remote
            continue
        results[cid] = _outcome(partial(_record_created, ctx, order, c, remote, _describe(c)))
    return results


def _before_blind_create(
    ctx: JobContext, order: Order, c: _OrderCustomer, who: str, subject: str
) -> None:
    """Before creating a customer the provider cannot look up again (Lightspeed without an
    email): when an earlier create of it got no answer, it may exist there already, and a second
    create would make a duplicate. The invoice is held for the merchant to link the one created
    (or to resolve the review item: it was not created). Else the attempt is recorded, and
    settled together with the link the create's answer brings."""
    store, conn_id, name = ctx.store, ctx.connection.id, ctx.connection.name
    provider = ctx.connection.provider
    now = ctx.clock.now()
    with store.session() as s:
        pending = next(iter(open_review_items(s, conn_id, [UNANSWERED], [subject])), None)
        if pending is None:
            _flag(
                s,
                conn_id,
                UNANSWERED,
                subject,
                {
                    "reason": (
                        f"created at {provider} for order {order.number}; if this item stays, "
                        "the answer never came back"
                    ),
                    "order": order.number,
                    "local": {
                        "local_id": c.id,
                        "name": c.name,
                        "email": c.email,
                        "account_number": c.account,
                    },
                    "candidates": [],
                },
                now,
            )
            return
        item_id = pending.id
    raise Rejected(
        f"order {order.number}: an earlier create of customer {who} at {provider} got no "
        f"answer and {provider} cannot look this customer up (no email): it may exist there. "
        f"Link it with `synccli customers link -c {name} {c.id} REMOTE_ID --force` (its id at "
        f"{provider}, not listed by link-customers yet), or, if it is not "
        f"there, `synccli customers review -c {name} --resolve {item_id}` to have it created"
    )


def _after_race(ctx: JobContext, c: _OrderCustomer, order: Order) -> str:
    with ctx.store.session() as s:
        link = link_by_local(s, ctx.connection.id, KIND, c.id) if c.id is not None else None
    if link is not None:
        return link.remote_id
    raise Rejected(
        f"order {order.number}: customer {_describe(c)}: its remote match was linked "
        "to another local customer meanwhile; see `synccli customers review`"
    )


def _describe(c: _OrderCustomer) -> str:
    bits = [f"#{c.id}" if c.id is not None else "(new)", repr(c.name)]
    if c.email:
        bits.append(f"<{c.email}>")
    if c.account:
        bits.append(f"[{c.account}]")
    return " ".join(bits)


# --- manual links, listing -----------------------------------------------------------------------
@dataclass
class CustomerRow:
    local_id: int
    name: str
    email: str | None
    account_number: str | None
    remote_id: str | None = None
    origin: str | None = None
    remote_name: str | None = None


@dataclass
class LinkChange:
    action: str  # linked | unlinked
    local_id: int
    remote_id: str
    name: str
    remote_name: str | None = None
    resolved: int = 0  # review items this settled
    warning: str | None = None


def _local_by_ref(s: Session, conn_id: int, ref: str, conn_name: str = "") -> Customer:
    """A local customer by id, or by email / account number when exactly one has it."""
    text = ref.strip()
    if text.isdigit():
        cust = s.get(Customer, int(text))
        if cust is not None and cust.connection_id == conn_id:
            return cust
        raise UsageError(
            f"no local customer #{text} in this connection "
            f"(see `synccli customers list -c {conn_name}`)"
        )
    email, account = norm_email(text), norm_account(text)
    rows = customers_by_email_or_account(s, conn_id, email, account)
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise UsageError(f"no local customer with id, email or account number {ref!r}")
    raise UsageError(
        f"{len(rows)} local customers have {ref!r}: name one by id "
        f"({', '.join('#' + str(r.id) for r in rows)})"
    )


def _under_review(s: Session, connection_id: int, remote_id: str) -> bool:
    """Whether an open review item names ``remote_id`` (a candidate the provider answered with
    at sale time, which link-customers may not have listed yet)."""
    for item in open_review_items(s, connection_id):
        detail = item.detail or {}
        named = [c.get("remote_id") for c in detail.get("candidates") or [] if isinstance(c, dict)]
        remote = detail.get("remote")
        if isinstance(remote, dict):
            named.append(remote.get("remote_id"))
        if remote_id in [str(n) for n in named if n is not None]:
            return True
    return False


def link_manual(
    store: Store,
    conn: Connection,
    local_ref: str,
    remote_id: str,
    now: datetime,
    force: bool = False,
) -> LinkChange:
    """Link a local customer to a remote one by hand (origin "manual"); settles the review items
    about either of them. No call is spent: a remote id link-customers has never seen (a typo,
    another account's id) is refused unless ``force``, and then linked with a warning."""
    remote_id = remote_id.strip()
    if not remote_id:
        raise UsageError("give the remote customer's id")
    with store.session() as s:
        cust = _local_by_ref(s, conn.id, local_ref, conn.name)
        mine = link_by_local(s, conn.id, KIND, cust.id)
        if mine is not None:
            if mine.remote_id == remote_id:
                raise UsageError(f"local customer #{cust.id} is already linked to {remote_id}")
            raise UsageError(
                f"local customer #{cust.id} is linked to {mine.remote_id}: "
                f"`synccli customers unlink -c {conn.name} {cust.id}` first"
            )
        theirs = link_by_remote(s, conn.id, KIND, remote_id)
        if theirs is not None:
            raise UsageError(
                f"remote customer {remote_id} is linked to local customer "
                f"#{theirs.local_id}: unlink that one first"
            )
        seen = seen_customer(s, conn.id, remote_id)
        if seen is None and not force and not _under_review(s, conn.id, remote_id):
            raise UsageError(
                f"remote customer {remote_id} has never been seen by link-customers: check the "
                f"id (`synccli link-customers -c {conn.name}` reads the provider's customers), or "
                "link it anyway with --force"
            )
        detail = _row_detail(seen) if seen is not None else {}
        add_link(
            s,
            conn.id,
            KIND,
            cust.id,
            remote_id,
            now,
            origin="manual",
            remote_code=detail.get("account") or detail.get("email"),
        )
        resolved = _resolve(s, conn.id, [f"local:{cust.id}", f"remote:{remote_id}"], now)
        warning = None
        if seen is None:
            warning = (
                f"remote customer {remote_id} has not been seen by link-customers: "
                "check the id (an unknown id makes invoices for this customer fail)"
            )
        elif not detail.get("active", True):
            warning = f"remote customer {remote_id} is archived at the provider"
        return LinkChange(
            "linked", cust.id, remote_id, cust.name, detail.get("name"), resolved, warning
        )


def unlink(store: Store, conn: Connection, local_ref: str, now: datetime) -> LinkChange:
    """Remove a local customer's link (the customers themselves are untouched)."""
    with store.session() as s:
        cust = _local_by_ref(s, conn.id, local_ref, conn.name)
        link = link_by_local(s, conn.id, KIND, cust.id)
        if link is None:
            raise UsageError(f"local customer #{cust.id} is not linked")
        remote_id = link.remote_id
        delete_link(s, link.id)
        return LinkChange("unlinked", cust.id, remote_id, cust.name)


def list_customers(
    store: Store, conn: Connection, unlinked_only: bool = False
) -> list[CustomerRow]:
    with store.session() as s:
        seen = load_seen(s, conn.id)
        rows = []
        for cust, link in customers_with_links(s, conn.id, KIND, unlinked_only):
            rid = link.remote_id if link is not None else None
            rows.append(
                CustomerRow(
                    cust.id,
                    cust.name,
                    cust.email,
                    cust.account_number,
                    rid,
                    link.origin if link is not None else None,
                    (seen.get(rid) or {}).get("name") if rid else None,
                )
            )
        return rows


# --- review --------------------------------------------------------------------------------------
@dataclass
class ReviewEntry:
    id: int
    kind: str
    subject: str
    created_at: datetime
    detail: dict[str, Any]


@dataclass
class DuplicateEntry:
    score: int
    reasons: list[str]
    a: dict[str, Any]
    b: dict[str, Any]


@dataclass
class ReviewReport:
    connection: str
    ambiguous: list[ReviewEntry] = field(default_factory=list)
    created: list[ReviewEntry] = field(default_factory=list)
    duplicates: list[DuplicateEntry] = field(default_factory=list)
    remote_customers_known: int = 0
    seconds: float = 0.0


def review(
    store: Store, conn: Connection, *, min_score: int = 0, include_inactive: bool = False
) -> ReviewReport:
    """What the merchant should look at: ambiguous matches, customers created at sale time, and
    suspected duplicates among the remote customers as link-customers last saw them (no call)."""
    started = time.perf_counter()
    out = ReviewReport(conn.name)
    with store.session() as s:
        items = open_review_items(s, conn.id, (AMBIGUOUS, UNANSWERED, CREATED))
        for item in items:
            entry = ReviewEntry(
                item.id, item.kind, item.subject, item.created_at, dict(item.detail or {})
            )
            (out.created if item.kind == CREATED else out.ambiguous).append(entry)
        seen = load_seen(s, conn.id)
        owners = {rid: ln.local_id for rid, ln in links_by_remote(s, conn.id, KIND).items()}
    out.remote_customers_known = len(seen)
    people = [
        Person(rid, d.get("name") or "", d.get("email"), d.get("account"))
        for rid, d in seen.items()
        if include_inactive or d.get("active", True)
    ]
    for pair in find_duplicates(people, min_score=min_score):
        out.duplicates.append(
            DuplicateEntry(pair.score, pair.reasons, _side(pair.a, owners), _side(pair.b, owners))
        )
    out.seconds = round(time.perf_counter() - started, 3)
    return out


def _side(p: Person, owners: dict[str, int]) -> dict[str, Any]:
    return {
        "remote_id": p.id,
        "name": p.name,
        "email": p.email,
        "account_number": p.account,
        "local_id": owners.get(p.id),
    }


def resolve_items(store: Store, conn: Connection, ids: list[int], now: datetime) -> int:
    """Mark review items done (the merchant has looked at them)."""
    with store.session() as s:
        items = review_items_by_id(s, conn.id, ids, (AMBIGUOUS, UNANSWERED, CREATED))
        missing = set(ids) - {i.id for i in items}
        if missing:
            raise UsageError(
                f"no review item {sorted(missing)[0]} for {conn.name} "
                "(see `synccli customers review`)"
            )
        for item in items:
            item.resolved_at = item.resolved_at or now
        return len(items)


__all__ = [
    "AMBIGUOUS",
    "CREATED",
    "DRY_RUN_REMOTE_ID",
    "DuplicatePair",
    "LinkReport",
    "ReviewReport",
    "ensure_customer",
    "link_customers",
    "link_manual",
    "list_customers",
    "norm_account",
    "norm_email",
    "parse_since",
    "review",
    "unlink",
]
