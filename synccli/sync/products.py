"""Products and stock: the incremental pull, the rotating sweep, and the one-off sync.

The provider is the source of truth for products, prices, descriptions and stock. Applying a
remote record is idempotent (a field is written, and an event recorded, only when it differs), so
the cursor's overlap and a crashed run's re-read never apply a change twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from synccli.clock import parse_since  # noqa: F401 - re-exported for the CLI
from synccli.connectors.base import Capabilities, Page, RemoteProduct, RemoteStock
from synccli.gc_tuning import fewer_collections
from synccli.store.bulk import chunks
from synccli.store.catalogue import (
    LinkTally,
    StockTarget,
    calls_today,
    claim_reads,
    count_links_unchecked_since,
    count_product_links,
    deactivate_products,
    has_products,
    insert_events,
    insert_links,
    insert_products,
    link_tally,
    live_product_links,
    lock_product_links,
    mark_ghosts,
    ok_runs_today,
    plan_for_each_execution,
    product_by_sku,
    product_fingerprints,
    products_by_id,
    products_by_sku,
    set_stock,
    stamp_links,
    stock_targets,
)
from synccli.store.models import Link, Product
from synccli.store.sync_state import (
    advance_cursor,
    any_uncoded,
    get_cursor,
    link_by_local,
    linked_local_ids,
    links_for,
    mark_uncoded,
    oldest_links,
    record_event,
    resolve_uncoded,
)
from synccli.sync.context import JobContext
from synccli.sync.jobs import Job
from synccli.sync.stream import APPLY_BATCH as APPLY_BATCH  # the tests size pulls by it
from synccli.sync.stream import Batch, CursorStream, Retry, apply_batch, timed_pages

T = TypeVar("T")
log = logging.getLogger("synccli.job")

KIND = "product"
FIELDS = ("name", "description", "price", "stock", "active")
# A record stamped more than this past the provider's clock (its Date header) has a stamp from
# a clock that runs ahead or a time-zone slip (issue 17): kept as it is, it would make every later
# real change look older than what we applied, and be skipped for good.
FUTURE_SLACK = timedelta(minutes=5)


@dataclass
class Change:
    """One field of one product that changed (or would, in a dry run)."""

    sku: str
    field: str
    old: Any
    new: Any


@dataclass
class PullReport:
    pages: int = 0
    seen: int = 0
    changed: int = 0
    new: int = 0
    deactivated: int = 0
    stock_seen: int = 0
    stock_unknown: int = 0  # stock rows for products we have no link for
    uncoded: int = 0  # remote products read with no code (nothing to match a shop product by)
    future_stamps: int = 0  # records stamped past the provider's clock (clamped to it)
    calls: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    cursor: dict[str, str | dict[str, int] | None] = field(default_factory=dict)  # ISO or version
    ghosts: list[dict[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # pushed changes (webhooks) this run applied, fetched and closed, and each stream's mode
    push: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepReport:
    requested: int = 0
    swept: int = 0
    changed: int = 0
    uncoded: int = 0  # remote products read with no code
    future_stamps: int = 0  # records stamped past the provider's clock (clamped to it)
    ghosts: list[dict[str, str]] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    # the pull that last read and checked the whole catalogue (Xero), within sweep_days: the
    # sweep had nothing to do
    swept_by_pull: datetime | None = None


@dataclass
class ProductSyncReport:
    sku: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    found: bool
    calls: int = 0
    future_stamps: int = 0  # 1 when the product was stamped past the provider's clock
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    deleted: bool = False  # linked, and gone at the provider: deactivated (a ghost)


def provider_now(ctx: JobContext) -> datetime:
    """The provider's clock as its latest answer gave it (``Date``), else ours."""
    served = getattr(getattr(ctx.connector, "http", None), "server_date", None)
    return served if isinstance(served, datetime) else ctx.clock.now()


def snapshot(product: Product | None) -> dict[str, Any] | None:
    if product is None:
        return None
    return {f: getattr(product, f) for f in ("sku", *FIELDS)}


@dataclass
class _Batch:
    """What one application of remote products reads before it decides, and what it decides."""

    links: dict[str, Link]  # by remote id
    by_sku: dict[str, Product]  # local products whose code an unlinked record has
    taken: set[int]  # of those, the ones linked already (to another remote product)
    by_id: dict[int, Product]  # the linked local products
    new: dict[str, RemoteProduct] = field(default_factory=dict)  # by code: added once
    stamp: list[int] = field(default_factory=list)  # links seen
    uncoded: list[tuple[str, str]] = field(default_factory=list)  # (remote id, name), no code
    to_link: list[tuple[int, RemoteProduct]] = field(default_factory=list)


@dataclass
class _FirstImport:
    """A connection with no product and no product link when its pull began. A batch none of
    whose records this run wrote before (by remote id or code) has nothing to find in the
    store, so it is written without reading anything back: those reads were a fifth of a first
    pull's PostgreSQL time at 50,000 products. Another process may create or link one of its
    products meanwhile (post-invoices does at sale time): the store's unique keys then refuse
    the batch, which is applied again with its reads, as is every batch after (``on`` off)."""

    on: bool
    remote_ids: set[str] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)

    def covers(self, records: list[RemoteProduct]) -> bool:
        """Whether ``records`` can have nothing stored."""
        ids, codes = self.remote_ids, self.codes
        return self.on and not any(r.remote_id in ids or r.code in codes for r in records)

    def wrote(self, records: list[RemoteProduct]) -> None:
        if self.on:
            self.remote_ids.update(r.remote_id for r in records)
            self.codes.update(r.code for r in records if r.code)

    def undoing(self, undo: Callable[[], None]) -> Callable[[], None]:
        """``undo``, and reads from then on (the batch met a row written meanwhile)."""

        def both() -> None:
            undo()
            self.on = False

        return both


@dataclass
class _HeldStock:
    """A first import's stock listing, read before its products so each new product is written
    with its stock in its row. Read after them (as a re-import is), every stock row read its
    link and product back and updated the product: on a first Unleashed pull of 50,000
    products into PostgreSQL that was a third of the pull (an update writes the whole row
    again, with its index entries).

    Only a product this run inserts takes a figure from here, and only from the one row its
    remote id is listed with (an id listed twice is applied in listing order with the rest, as
    a re-import does). The stock stream then reads these same pages (their cursors still move
    only once they are committed, after the products), passing over each row taken (its
    figure is stored) and applying the others: a product that existed, one whose insert was
    undone and applied again with reads, a row for no product read."""

    pages: list[Page[RemoteStock]]
    rest: Iterator[Page[RemoteStock]]  # the listing past HOLD_STOCK rows, read afterwards
    once: dict[str, RemoteStock]  # remote id -> its row, of the ids listed once
    # the rows whose quantity went into their product's row, by remote id (insertion-ordered:
    # undone from the end when a batch is applied again)
    taken: dict[str, RemoteStock] = field(default_factory=dict)
    read_times: dict[str, datetime] = field(default_factory=dict)  # of ``once``'s rows

    def take(self, remote_id: str) -> Decimal | None:
        row = self.once.get(remote_id)
        if row is None:
            return None
        self.taken[remote_id] = row
        return row.quantity

    def read_at(self, remote_id: str) -> datetime | None:
        """When the row taken for ``remote_id`` was read (None: none was taken)."""
        return self.read_times.get(remote_id) if remote_id in self.taken else None

    def stored(self, row: RemoteStock) -> bool:
        """Whether ``row`` (this very row, not another of its id) went into its product's row."""
        return self.taken.get(row.remote_id) is row

    def mark(self) -> Callable[[], None]:
        """How to undo what the next attempt of a batch takes."""
        size = len(self.taken)

        def undo() -> None:
            while len(self.taken) > size:
                self.taken.popitem()

        return undo

    def listing(self) -> Iterator[Page[RemoteStock]]:
        """The stock stream's pages: the held ones, then the rest of the listing."""
        yield from self.pages
        yield from self.rest


# Stock rows a first import holds in memory to write them with their products (about 400 bytes
# a row); a longer listing's rest is read and applied after the products, as a re-import's is.
HOLD_STOCK = 100_000


def _stock_first(ctx: JobContext, since: datetime | None, run_start: datetime) -> _HeldStock | None:
    """A first import's stock listing, when stock is listed apart from products (Unleashed,
    Lightspeed X-Series) and the connection has no product and no product link yet (else the
    pull reads it after the products, as always). Read from where the stock stream starts.

    PostgreSQL only: there a stock row's read-back and update cost a third of the pull. On
    SQLite they are in-process and cheap, and the calls' ledger is written behind only while
    a stream's pages are read (``calls_deferred``), so the order of the calls stays as it was."""
    if ctx.dry_run or ctx.store.is_sqlite or ctx.connector.capabilities.stock_in_product:
        return None
    if _has_products(ctx):
        return None
    stream: CursorStream[RemoteStock] = CursorStream(ctx, "stock", since, run_start)
    listing = timed_pages(
        ctx.clock, lambda: ctx.calls, lambda: ctx.connector.changed_stock(stream.start)
    )
    pages: list[Page[RemoteStock]] = []
    rows = 0
    while rows < HOLD_STOCK and (page := next(listing, None)) is not None:
        pages.append(page)
        rows += len(page.records)
    listed = Counter(r.remote_id for page in pages for r in page.records)
    once = {r.remote_id: r for page in pages for r in page.records if listed[r.remote_id] == 1}
    return _HeldStock(pages, listing, once, read_times=_read_times(pages))


class _Applier:
    """Applies remote products to local ones within one session (a page or a batch)."""

    def __init__(
        self,
        ctx: JobContext,
        s: Session,
        now: datetime,
        changes: list[Change],
        stamped_since: datetime | None = None,
        authoritative: bool = False,
        first: _FirstImport | None = None,
        held: _HeldStock | None = None,
        read_at: datetime | Mapping[str, datetime] | None = None,
    ) -> None:
        self.ctx, self.s, self.now, self.changes = ctx, s, now, changes
        self.first = first
        self.held = held
        # When the records were read (one time for them all, or by remote id): a record read
        # before the read its link holds is older than what the store has, and is not applied
        # (see claim_reads). None: not known, nothing compared (as before).
        self.read_at = read_at
        self.claimed: set[str] | None = None  # remote ids whose links took this read
        self.stock_claimed: set[str] | None = None  # ... and whose stock figures did
        # The records are the provider's current state, fetched for a check (a sweep, a
        # sync-product): their field values are applied whatever their stamps say.
        self.authoritative = authoritative
        self.served = provider_now(ctx)
        self.stamp_limit = self.served + FUTURE_SLACK
        # a link stamped at or after this (by this run's products) need not be stamped again
        # for its stock: 50,000 index moves on a first Unleashed pull, for a few seconds' news
        self.stamped_since = stamped_since
        self.conn_id = ctx.connection.id
        self.dry = ctx.dry_run
        self.deactivated = 0
        self._planned = False

    def _reading(self) -> None:
        """Before this transaction's first read by a list of values: plan each execution for
        its own values (see ``plan_for_each_execution``). Not before: a first import's batch
        reads nothing, and under that setting PostgreSQL plans the foreign-key check of every
        row its COPY writes anew (twice the server's work of the COPY)."""
        if not self._planned:
            plan_for_each_execution(self.s)
            self._planned = True

    def _read_time(self, remote_id: str) -> datetime | None:
        read_at = self.read_at
        if read_at is None or isinstance(read_at, datetime):
            return read_at
        return read_at.get(remote_id)

    def _stock_read_time(self, remote: RemoteProduct) -> datetime | None:
        """When the stock figure a new link's product was written with was read: with the
        record, or from the stock listing a first import read before (see _HeldStock)."""
        if remote.stock is not None:
            return self._read_time(remote.remote_id)
        return self.held.read_at(remote.remote_id) if self.held is not None else None

    def _claim(
        self, remote_ids: list[str], stock: bool = False, *, locked: bool = False
    ) -> set[str] | None:
        """Claim the links of ``remote_ids`` for this read (of their stock figures, with
        ``stock``) before anything of them is read (see claim_reads); answers the remote ids
        claimed (None: no read time known, nothing claimed). A record whose link holds a later
        read is then passed over.

        The links are locked first, all at once in remote-id order (see lock_product_links),
        then claimed one read time after another (a pull's batch of pages, each read at its own
        time). Locked by each claim, a link of a later read that sorts first would be locked
        after links that sort after it: another transaction may take them in the other order
        (a deadlock). ``locked``: this transaction's earlier claim locked them already."""
        if self.read_at is None:
            return None
        groups: dict[datetime, list[str]] = {}
        for rid in remote_ids:
            at = self._read_time(rid)
            if at is not None:
                groups.setdefault(at, []).append(rid)
        if not locked:
            lock_product_links(
                self.s, self.conn_id, [rid for ids in groups.values() for rid in ids]
            )
        claimed: set[str] = set()
        for at, ids in groups.items():
            claimed |= claim_reads(self.s, self.conn_id, ids, at, stock=stock, locked=True)
        return claimed

    def _stale(
        self, remote_id: str, link: Link | StockTarget | None, claimed: set[str] | None
    ) -> bool:
        """Whether the store holds a later read of this linked record (of its stock, where
        ``claimed`` is ``stock_claimed``) than this run's."""
        if link is None or claimed is None or remote_id in claimed:
            return False
        if self._read_time(remote_id) is None:
            return False  # no read time to rank (claimed nothing): applied as before
        log.info(
            "product %s: read at %s, before the copy the store holds; not applied",
            remote_id,
            self._read_time(remote_id),
        )
        return True

    def apply_products(self, records: list[RemoteProduct], report: Any) -> None:
        """Apply one page: update linked products, link unlinked ones by exact code, and insert
        new ones (in bulk: a first import of 50,000 products is one statement a page)."""
        self._clamp_future(records, report)
        batch = self._load(records)
        for remote in records:
            if self._stale(remote.remote_id, batch.links.get(remote.remote_id), self.claimed):
                continue  # an older read than the store holds: not a change, nothing written
            self._apply_one(remote, batch, report)
        if hasattr(report, "uncoded"):
            report.uncoded += len(batch.uncoded)
        if not self.dry:
            self._write(records, batch)
            if self.first is not None:
                self.first.wrote(records)

    def _load(self, records: list[RemoteProduct]) -> _Batch:
        """The links and local products ``records`` concern, in a few set-based reads (none on
        a first import, see ``_FirstImport``)."""
        if self.first is not None and self.first.covers(records):
            return _Batch({}, {}, set(), {})
        self._reading()
        self.claimed = self._claim([r.remote_id for r in records])
        with_stock = [r.remote_id for r in records if r.stock is not None]
        # among the links the claim above locked (those with a read time): none to lock again
        self.stock_claimed = self._claim(with_stock, stock=True, locked=True)
        links = links_for(self.s, self.conn_id, KIND, [r.remote_id for r in records])
        unlinked_codes = [r.code for r in records if r.remote_id not in links and r.code]
        by_sku = products_by_sku(self.s, self.conn_id, unlinked_codes) if unlinked_codes else {}
        taken = linked_local_ids(self.s, self.conn_id, KIND, [p.id for p in by_sku.values()])
        linked_ids = [lk.local_id for r in records if (lk := links.get(r.remote_id))]
        return _Batch(links, by_sku, taken, products_by_id(self.s, linked_ids))

    def _apply_one(self, remote: RemoteProduct, batch: _Batch, report: Any) -> None:
        link = batch.links.get(remote.remote_id)
        local = batch.by_id.get(link.local_id) if link else None
        stored = link.remote_updated_at if link is not None else None
        if stored is not None and stored > self.stamp_limit:
            stored = None  # a future stamp kept by an earlier version blocks nothing
        if (
            not self.authoritative
            and stored is not None
            and remote.updated_at
            and remote.updated_at < stored
        ):
            return  # an older copy than we applied (overlap re-read)
        if local is None:
            local = self._match(remote, link, batch, report)
            if local is None:
                return
        stock = not self._stale(remote.remote_id, link, self.stock_claimed)
        changed = self._set_fields(local, remote, stock=stock)
        if link is not None and remote.code and link.remote_code != remote.code:
            changed = self._recoded(link, local, remote) or changed
        if changed:
            report.changed += 1
        if not self.dry and link is not None:
            batch.stamp.append(link.id)
            if (
                remote.updated_at
                and remote.updated_at != link.remote_updated_at
                and (self.authoritative or stored is None or remote.updated_at > stored)
            ):
                link.remote_updated_at = remote.updated_at
            state = "linked" if remote.active else "archived"
            if link.state != state:
                link.state = state
            # the record the local one now holds (None: compared in full next time, as where
            # its stock figure was not taken, the store holding a later read of it)
            fingerprint = remote.fingerprint if stock or remote.stock is None else None
            if link.fingerprint != fingerprint:
                link.fingerprint = fingerprint

    def _match(
        self, remote: RemoteProduct, link: Link | None, batch: _Batch, report: Any
    ) -> Product | None:
        """The local product of the same code for a remote one with no linked product, linked
        to it (by exact code only: a provider's prefix match never reaches here); None when there
        is none to apply it to (then it is new, uncoded, or refused)."""
        local = batch.by_sku.get(remote.code)
        if local is not None and local.id in batch.taken and link is None:
            report.errors.append(
                f"product {remote.code}: the local product with this code is linked to "
                f"another remote product; not linked to {remote.remote_id}"
            )
            return None
        if local is None:
            self._new(remote, batch, report)
            return None
        if not self.dry:
            if link is None:
                batch.to_link.append((local.id, remote))
                batch.taken.add(local.id)
            else:
                link.local_id = local.id
        return local

    def _new(self, remote: RemoteProduct, batch: _Batch, report: Any) -> None:
        """A remote product no local one has the code of: a new product, once a code."""
        earlier = batch.new.get(remote.code)
        if earlier is not None and earlier.remote_id == remote.remote_id:
            # the same product twice in a batch (its stamp moved while we paged): the later copy
            # is the newer
            batch.new[remote.code] = remote
            return
        if not remote.code:
            # A real record with nothing in the field that holds the shop's code (a Lightspeed
            # item with no customSku, issue 17): it cannot be matched to a shop product, so it
            # is counted and kept for ``status``, not reported as an error every run.
            batch.uncoded.append((remote.remote_id, remote.name))
            return
        if earlier is not None:
            report.errors.append(
                f"remote product {remote.remote_id}: code {remote.code!r} is empty or "
                "repeated; skipped"
            )
            return
        report.new += 1
        self.changes.append(Change(remote.code, "new", None, remote.name))
        batch.new[remote.code] = remote

    def _write(self, records: list[RemoteProduct], batch: _Batch) -> None:
        """The batch's set-based writes: uncoded items, link stamps, new products and links."""
        if batch.uncoded:
            mark_uncoded(self.s, self.conn_id, batch.uncoded, self.now)
        coded = [r.remote_id for r in records if r.code]
        if coded and any_uncoded(self.s, self.conn_id):
            resolve_uncoded(self.s, self.conn_id, coded, self.now)  # given a code since
        stamp_links(self.s, batch.stamp, self.now)
        to_link = batch.to_link
        if batch.new:
            held = self.held
            ids = insert_products(
                self.s,
                [
                    {
                        "connection_id": self.conn_id,
                        "sku": r.code,
                        "name": r.name,
                        "description": r.description,
                        "price": r.price,
                        # a new product's stock figure, held from the listing read before
                        "stock": r.stock
                        if r.stock is not None or held is None
                        else held.take(r.remote_id),
                        "active": r.active,
                        "updated_at": self.now,
                    }
                    for r in batch.new.values()
                ],
            )
            to_link.extend((ids[code], r) for code, r in batch.new.items())
        insert_links(
            self.s,
            [
                {
                    "connection_id": self.conn_id,
                    "kind": KIND,
                    "local_id": local_id,
                    "remote_id": r.remote_id,
                    "remote_code": r.code,
                    "origin": "matched",
                    "state": "linked" if r.active else "archived",
                    "last_synced_at": self.now,
                    "remote_updated_at": r.updated_at,
                    "read_at": self._read_time(r.remote_id),
                    "stock_read_at": self._stock_read_time(r),
                    "created_at": self.now,
                    "fingerprint": r.fingerprint,
                }
                for local_id, r in to_link
            ],
        )

    def _recoded(self, link: Link, local: Product, remote: RemoteProduct) -> bool:
        """The provider's code for a linked product changed (a re-SKU there): the link follows
        it, so invoices for the product post against the item it is linked to, and the change
        is an event (field ``remote_code``). The shop's own SKU stays as the shop set it."""
        if link.remote_code is None:  # a link made before codes were kept: no news
            if not self.dry:
                link.remote_code = remote.code
            return False
        self.changes.append(Change(local.sku, "remote_code", link.remote_code, remote.code))
        if self.dry:
            return True
        record_event(
            self.s,
            run_id=self.ctx.run_id,
            connection_id=self.conn_id,
            kind=KIND,
            local_id=local.id,
            field="remote_code",
            old=link.remote_code,
            new=remote.code,
            at=self.now,
        )
        log.info(
            "product %s: code at the provider changed %r -> %r (remote id %s)",
            local.sku,
            link.remote_code,
            remote.code,
            remote.remote_id,
        )
        link.remote_code = remote.code
        return True

    def _clamp_future(self, records: list[RemoteProduct], report: Any) -> None:
        """A stamp more than FUTURE_SLACK past the provider's clock becomes that clock's time,
        and is counted in the run (``future_stamps``) and logged."""
        for remote in records:
            if remote.updated_at is not None and remote.updated_at > self.stamp_limit:
                # one line each with -v; the run's count is what a command reports
                log.info(
                    "product %s (%s): stamped %s, past the provider's clock (%s); clamped",
                    remote.code,
                    remote.remote_id,
                    remote.updated_at.isoformat(),
                    self.served.isoformat(),
                )
                remote.updated_at = self.served
                report.future_stamps += 1

    def _set_fields(
        self, local: Product, remote: RemoteProduct, quiet: bool = False, stock: bool = True
    ) -> bool:
        """Write what differs; ``stock``: the record's stock figure too (False: the store holds
        a later read of it)."""
        wanted = {
            "name": remote.name,
            "description": remote.description,
            "price": remote.price,
            "active": remote.active,
        }
        if remote.stock is not None and stock:
            wanted["stock"] = remote.stock
        changed = False
        for name, new in wanted.items():
            old = getattr(local, name)
            if _same(old, new):
                continue
            if name == "stock" and old is None:
                # a first stock figure is the product's initial state (see apply_stock)
                if not self.dry:
                    local.stock = remote.stock
                    local.updated_at = self.now
                continue
            changed = True
            if name == "active" and new is False and not quiet:
                self.deactivated += 1
            if not quiet:
                self.changes.append(Change(local.sku, name, old, new))
            if self.dry:
                continue
            if not quiet:
                record_event(
                    self.s,
                    run_id=self.ctx.run_id,
                    connection_id=self.conn_id,
                    kind=KIND,
                    local_id=local.id,
                    field=name,
                    old=old,
                    new=new,
                    at=self.now,
                )
            setattr(local, name, new)
            local.updated_at = self.now
        return changed and not quiet

    def apply_stock(self, records: list[RemoteStock], report: PullReport) -> None:
        """Apply one page of stock rows, set-based: one query a chunk reads their links and
        products as plain rows, and one statement a kind writes the page's changes (events,
        product stock, link stamps), instead of a tracked object and a flush per row."""
        if self.held is not None:  # rows stored with their new products (see _HeldStock)
            rest = [row for row in records if not self.held.stored(row)]
            report.stock_seen += len(records) - len(rest)
            records = rest
            if not records:
                return
        self._reading()
        self.stock_claimed = self._claim([r.remote_id for r in records], stock=True)
        targets = stock_targets(self.s, self.conn_id, [r.remote_id for r in records])
        since = self.stamped_since
        fresh = {
            t.link_id
            for t in targets.values()
            if since is not None and t.synced is not None and t.synced >= since
        }
        events: list[dict[str, Any]] = []
        stock: dict[int, Decimal | None] = {}  # product id -> new stock (a later row wins)
        stamps: list[int] = []
        for row in records:
            report.stock_seen += 1
            target = targets.get(row.remote_id)
            if target is None:
                report.stock_unknown += 1
                continue
            if self._stale(row.remote_id, target, self.stock_claimed):
                continue  # the store holds a later read of this product's stock
            link_id, local_id, sku, old = (
                target.link_id,
                target.product_id,
                target.sku,
                target.stock,
            )
            if _same(old, row.quantity):
                continue
            if old is None:
                # The product's first stock figure is its initial state, not a change: no event
                # and not counted, as for a product that arrives with its stock (Xero,
                # Lightspeed). On a first Unleashed pull that was 50,000 "changes".
                if not self.dry:
                    targets[row.remote_id] = target._replace(stock=row.quantity)
                    stock[local_id] = row.quantity
                    stamps.append(link_id)
                continue
            report.changed += 1
            self.changes.append(Change(sku, "stock", old, row.quantity))
            if self.dry:
                continue
            # a page naming one product twice compares its second row with the first
            targets[row.remote_id] = target._replace(stock=row.quantity)
            events.append(self._event_row(local_id, "stock", old, row.quantity))
            stock[local_id] = row.quantity
            stamps.append(link_id)
        if not stock:
            return
        insert_events(self.s, events)
        set_stock(self.s, stock, self.now)
        stamp_links(self.s, [i for i in stamps if i not in fresh], self.now)

    def _event_row(self, local_id: int, name: str, old: Any, new: Any) -> dict[str, Any]:
        """An ``events`` row as :func:`record_event` writes it, for a bulk insert."""
        return {
            "run_id": self.ctx.run_id,
            "connection_id": self.conn_id,
            "kind": KIND,
            "local_id": local_id,
            "field": name,
            "old": None if old is None else str(old),
            "new": None if new is None else str(new),
            "at": self.now,
        }


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, Decimal) or isinstance(new, Decimal):
        if old is None or new is None:
            return old is None and new is None
        return Decimal(old) == Decimal(new)
    return old == new


def pull_products(
    ctx: JobContext,
    since: datetime | None = None,
    on_page: Callable[[PullReport], None] | None = None,
) -> PullReport:
    """Products and stock changed since the stored cursor (or ``since``), page by page.

    Each page is applied and committed together with the cursor it allows, so a crash loses at
    most the page in flight, and the next run re-reads it (with the provider's overlap).
    """
    from synccli.sync import push

    started = time.perf_counter()
    report = PullReport(dry_run=ctx.dry_run)
    connector = ctx.connector
    run_start = ctx.clock.now()
    streams: list[tuple[str, Callable[[datetime | None], Any]]] = [
        ("products", connector.changed_products),
        ("stock", connector.changed_stock),
    ]
    # pushed changes first (no call); a stream whose deliveries are healthy is polled only
    # every safety_poll, and its hints are fetched instead (see sync/push.py)
    pushed = push.PushReport()
    modes = push.before_poll(ctx, push.PRODUCT_STREAMS, pushed)
    polled = [name for name, _ in streams if modes[name].due or since is not None]
    spared = [name for name, _ in streams if name not in polled]
    if spared and push.hints_cost_more(ctx, spared):
        polled = [name for name, _ in streams]  # a poll reads the hinted records for fewer calls
    with fewer_collections():
        held = _stock_first(ctx, since, run_start) if len(polled) == len(streams) else None
        for stream, fetch in streams:
            if stream in polled:
                _pull_stream(ctx, stream, fetch, since, run_start, report, on_page, held)
                push.after_poll(ctx, stream, run_start, pushed)
    rest = [name for name, _ in streams if name not in polled]
    if rest:
        push.fetch_product_hints(ctx, pushed, rest)
    if polled:  # delivered while the poll ran (this run's lease kept `webhooks apply` away)
        push.apply_products(ctx, pushed)
    report.push = pushed.summary()
    report.calls = ctx.calls
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _pull_stream(
    ctx: JobContext,
    name: str,
    fetch: Callable[[datetime | None], Any],
    since: datetime | None,
    run_start: datetime,
    report: PullReport,
    on_page: Callable[[PullReport], None] | None,
    held: _HeldStock | None = None,
) -> None:
    """One stream of a pull (products or stock), from its cursor to its end. ``held``: the
    stock listing a first import read before its products (see ``_HeldStock``)."""
    caps = ctx.connector.capabilities
    stream: CursorStream[Any] = CursorStream(ctx, name, since, run_start)
    if name == "stock" and caps.stock_in_product and stream.start_here_if_new():
        # The first full read brought stock inside the products: the stock stream starts at
        # this run instead of reading every stock row ever changed.
        return
    products = name == "products"
    if held is not None and not products:
        fetch = lambda _start: held.listing()  # noqa: E731 - read before the products
    # a held stock listing was read for a connection found empty (a product created since is
    # met by the unique keys, as for any first import)
    first = _FirstImport(on=products and (held is not None or not _has_products(ctx)))
    began_empty = first.on
    known: KnownLinks | None = None
    sweeping = products and caps.full_catalogue_call and _sweep_due(ctx, run_start)
    if products and caps.full_catalogue_call and not sweeping:
        # The whole catalogue, every pull: only what differs from the fingerprint its link
        # keeps is read into records and applied (the rest is listed as unchanged).
        with ctx.store.read_session() as s:
            known = KnownLinks(link_tally(s, ctx.connection.id), partial(_fingerprints, ctx))
        fetch = partial(_whole_catalogue, ctx.connector, known)
    authoritative = stream.by_value or sweeping

    def counted(batch: Batch[Any]) -> None:
        report.pages += len(batch.pages)

    def apply(s: Session, batch: Batch[Any]) -> None:
        applier = _Applier(
            ctx,
            s,
            batch.now,
            report.changes,
            run_start,
            authoritative=authoritative,
            first=first,
            held=held,
            read_at=_read_times(batch.pages),
        )
        if products:
            report.seen += len(batch.records) + sum(len(p.unchanged) for p in batch.pages)
            applier.apply_products(batch.records, report)
        else:
            applier.apply_stock(batch.records, report)
        report.deactivated += applier.deactivated
        for page in batch.pages:
            report.errors.extend(page.errors)

    stream.read(
        fetch,
        apply,
        counted=counted,
        applied=(lambda: on_page(report)) if on_page is not None else None,
        batch_records=apply_batch(ctx.store),
        # post-invoices linked or created one of these products (by SKU, at sale time) between
        # our read and our write: the batch is applied again over that
        retry=Retry(
            partial(_undo_mark, report, first, held if products else None), LINKED_MEANWHILE
        ),
        track_seen=products,
    )
    if products and caps.full_catalogue_call:
        if known is not None:
            known.see(stream.unchanged)
        # a connection with no product link before this run has none the listing could lack
        if began_empty:
            checked = not report.errors
        else:
            checked = _check_ghosts(ctx, stream.seen, report, known)
        if checked and sweeping and not ctx.dry_run:
            with ctx.writing() as s:  # this pull did the sweep's work (see _sweep_due)
                advance_cursor(s, ctx.connection.id, SWEPT_BY_PULL, run_start, ctx.clock.now())
    cursor = stream.advance()
    if not ctx.dry_run:
        shown = caps.shown_stamp(cursor)
        report.cursor[name] = shown.isoformat() if isinstance(shown, datetime) else shown


LINKED_MEANWHILE = "a product was linked meanwhile"


def _read_times(pages: list[Page[Any]]) -> dict[str, datetime]:
    """remote id -> when the page that listed it was read (a later page's read wins)."""
    return {r.remote_id: p.read_at for p in pages if p.read_at for r in p.records}


def _undo_mark(
    report: PullReport, first: _FirstImport, held: _HeldStock | None
) -> Callable[[], None]:
    """Before an attempt at a batch: how to undo its counts, and the stock figures it took."""
    restore = partial(_Mark.of(report).restore, report)
    if held is not None:
        take_back = held.mark()

        def both() -> None:
            restore()
            take_back()

        return first.undoing(both)
    return first.undoing(restore)


# Where every pull reads the whole catalogue (Xero), one pull every sweep_days does the sweep's
# work too (see _sweep_due), and sweep-oldest then has nothing left to call for.
SWEPT_BY_PULL = "catalogue-swept"
SWEEP_SLACK = timedelta(hours=12)  # that pull comes this much early, so none is ever late


def _has_products(ctx: JobContext) -> bool:
    with ctx.store.session() as s:
        return has_products(s, ctx.connection.id)


class KnownLinks:
    """The live product links of a whole-catalogue read, by the fingerprint each keeps.

    Held first as the database's tally of them: a listing that matches it whole (nothing
    changed, the usual pull) is compared with it alone. Only one that does not has the links
    read, a row each (``load``, on the thread that reads the listing), to find what changed."""

    def __init__(self, tally: LinkTally, load: Callable[[int], tuple[dict[int, int], list[int]]]):
        self.tally = tally
        self.linked = tally.links  # live links, when the tally was taken
        self.matched = 0  # links the read listed unchanged
        self.whole = False  # the last listing matched the tally whole
        self._load = load
        self._lock = threading.Lock()
        self._rows: tuple[dict[int, int], list[int]] | None = None

    def holds_exactly(self, fingerprints: Sequence[int]) -> bool:
        self.whole = self.tally.holds_exactly(fingerprints)
        return self.whole

    def held(self) -> dict[int, int]:
        return self._links()[0]

    def _links(self) -> tuple[dict[int, int], list[int]]:
        """fingerprint -> link id, and the ids of the links with none: read once, and only
        links the tally counted (one linked since, while the listing was read, is not missing
        from it)."""
        with self._lock:
            if self._rows is None:
                self._rows = self._load(self.tally.newest)
            return self._rows

    def see(self, fingerprints: list[int]) -> None:
        """The read listed these unchanged: what is left are the links it did not (or listed
        changed, among its records)."""
        if self.whole:
            self.matched = self.linked
            return
        by_fingerprint, unprinted = self._links()
        left = by_fingerprint.keys() - set(fingerprints)  # set arithmetic: no loop a link
        self.matched += len(by_fingerprint) - len(left)
        self._rows = ({fp: by_fingerprint[fp] for fp in left}, unprinted)

    def unseen(self) -> list[int]:
        if self.whole:
            return []
        by_fingerprint, unprinted = self._links()
        return [*by_fingerprint.values(), *unprinted]


def _fingerprints(ctx: JobContext, upto: int) -> tuple[dict[int, int], list[int]]:
    with ctx.store.read_session() as s:  # on SQLite, no write lock taken for a read
        return product_fingerprints(s, ctx.connection.id, upto)


def _whole_catalogue(connector: Any, known: KnownLinks, since: datetime | None) -> Any:
    """The fetch of a whole-catalogue pull (``since`` means nothing to a listing of it all)."""
    return connector.whole_catalogue(known)


def _sweep_period(ctx: JobContext) -> timedelta:
    return timedelta(days=_sweep_days(ctx))


def _sweep_due(ctx: JobContext, now: datetime) -> bool:
    """Whether this whole-catalogue pull does the sweep's work (once every ``sweep_days``): it
    compares every item with its local product in full, fingerprints aside (what the shop's own
    writes changed locally is put back as the provider has it), applies what differs whatever
    the stamps say (a record whose stamp went back is still the provider's), and once its read
    proved whole, says so for sweep-oldest."""
    with ctx.store.session() as s:
        cursor = get_cursor(s, ctx.connection.id, SWEPT_BY_PULL)
    if cursor is None or cursor.value is None:
        return True
    return now - cursor.value >= _sweep_period(ctx) - SWEEP_SLACK


def swept_by_pull(ctx: JobContext) -> datetime | None:
    """When a pull last did the sweep's work, if within ``sweep_days``: a whole-catalogue
    provider's sweep then has nothing to check that the pulls do not."""
    if not ctx.connector.capabilities.full_catalogue_call:
        return None
    with ctx.store.session() as s:
        cursor = get_cursor(s, ctx.connection.id, SWEPT_BY_PULL)
    at = cursor.value if cursor is not None else None
    if at is None or ctx.clock.now() - at >= _sweep_period(ctx):
        return None
    return at


def _check_ghosts(
    ctx: JobContext, seen: set[str], report: PullReport, known: KnownLinks | None = None
) -> bool:
    """After one call read the whole catalogue: whatever is missing from it has vanished, when
    the read is whole and plausible. Answers whether it was (the check was made).

    ``known``: the links the read listed unchanged (not in ``seen``) are gone from it, so only
    the links left there are looked for in ``seen``; without, every live link is."""
    listed = len(seen) + (known.matched if known is not None else 0)
    if report.errors:
        # an unreadable record may be one of ours: nothing is a ghost on this evidence
        log.warning("ghost check skipped: the catalogue had unreadable records")
        return False
    if not _plausible_catalogue(ctx, listed, None if known is None else known.linked):
        # an empty or truncated answer must not turn the whole catalogue into ghosts
        report.errors.append(
            f"ghost check skipped: the provider listed {listed} products, under "
            "half of those linked; the sweep will check them one batch at a time"
        )
        return False
    _flag_missing(ctx, seen, report, None if known is None else known.unseen())
    return True


@dataclass
class _Mark:
    """A report's counts before a page, to undo a page that is applied again."""

    seen: int
    changed: int
    new: int
    deactivated: int
    changes: int
    errors: int
    uncoded: int = 0

    @classmethod
    def of(cls, r: PullReport) -> _Mark:
        return cls(
            r.seen, r.changed, r.new, r.deactivated, len(r.changes), len(r.errors), r.uncoded
        )

    def restore(self, r: PullReport) -> None:
        r.seen, r.changed, r.new = self.seen, self.changed, self.new
        r.uncoded = self.uncoded
        r.deactivated = self.deactivated
        del r.changes[self.changes :]
        del r.errors[self.errors :]


def _plausible_catalogue(ctx: JobContext, listed: int, linked: int | None = None) -> bool:
    """Whether a listing of ``listed`` products can be the whole catalogue of ``linked`` live
    links (counted here when not given)."""
    if linked is None:
        with ctx.store.session() as s:
            linked = count_product_links(s, ctx.connection.id, live_only=True)
    return linked < 20 or listed * 2 >= linked


def _flag_missing(
    ctx: JobContext, seen: set[str], report: PullReport, link_ids: list[int] | None = None
) -> None:
    """After a read of the whole catalogue: every linked product it lacks is looked up by id
    (in the provider's batches) and has vanished only if that look-up does not find it either.
    ``link_ids``: the only links it may lack (the others it listed); None: any live link.

    A listing is not proof of absence: one paged while the catalogue changed skips records
    (issue 17), and one answer can drop a record it still has. A product the look-up finds is
    applied as found (a new code, archived, ...) and is not a ghost."""
    if link_ids is not None and not link_ids:
        return
    with ctx.store.session() as s:
        rows = live_product_links(s, ctx.connection.id, link_ids)
    missing = [row for row in rows if row.remote_id not in seen]
    if not missing:
        return
    # no transaction is held across the look-up (see design §11)
    read_at = ctx.clock.now()
    found = ctx.connector.get_products([row.remote_id for row in missing])
    if found:
        with ctx.writing() as s:
            _Applier(
                ctx, s, ctx.clock.now(), report.changes, authoritative=True, read_at=read_at
            ).apply_products(found, report)
            if ctx.dry_run:
                s.rollback()
        alive = {p.remote_id for p in found}
        missing = [row for row in missing if row.remote_id not in alive]
    now = ctx.clock.now()
    for row in missing:
        report.ghosts.append({"sku": row.sku, "remote_id": row.remote_id, "state": "ghost"})
    if ctx.dry_run or not missing:
        return
    with ctx.writing() as s:
        for chunk in chunks(missing):
            mark_ghosts(s, [row.link_id for row in chunk], now)
            active = [row for row in chunk if row.active]
            if not active:
                continue
            deactivate_products(s, [row.product_id for row in active], now)
            for row in active:
                report.deactivated += 1
                record_event(
                    s,
                    run_id=ctx.run_id,
                    connection_id=ctx.connection.id,
                    kind=KIND,
                    local_id=row.product_id,
                    field="active",
                    old=True,
                    new=False,
                    at=now,
                )


def sweep_budget(ctx: JobContext, reserve_invoices: int = 100, reserve_pulls: int = 50) -> int:
    """``sweep-oldest auto``: today's share of the catalogue (all of it within ``sweep_days``,
    default 7), less what earlier sweeps did today, in whole batches where it goes by id
    (:func:`_by_id_share`), within the day's leftover calls after keeping some back for
    invoices and pulls (priorities: invoices, pulls, then sweeps)."""
    caps = ctx.connector.capabilities
    limits = caps.limits
    now = ctx.clock.now()
    with ctx.store.session() as s:
        links = count_product_links(s, ctx.connection.id)
        used = calls_today(s, ctx.connection.id, now)
        runs = ok_runs_today(s, ctx.connection.id, Job.SWEEP_OLDEST, now)
        swept_today = sum(int((r.counts or {}).get("swept") or 0) for r in runs)
    if caps.full_catalogue_call:
        return links  # one call reads the whole catalogue
    days = _sweep_days(ctx)
    want = max(0, math.ceil(links / days) - swept_today)
    per_day = limits.per_day or (math.floor(limits.per_month / 30) if limits.per_month else None)
    left = None if per_day is None else max(0, per_day - used - reserve_invoices - reserve_pulls)
    affordable = left is None or left >= _catalogue_read_calls(caps, links)
    if _catalogue_read_pays(caps, links, links):
        # One listing checks every product, and costs fewer calls than the whole catalogue by
        # id: it is the cheapest way to cover sweep_days, so it runs once per sweep_days
        # (Unleashed: 6 + 6 pages a week, not 6 pages a night). Until the next is due there
        # is nothing to sweep; a listing that could not be read whole is due again at once.
        if not _catalogue_sweep_due(ctx, now, days):
            return 0
        if affordable:
            return links
    elif want and affordable and _catalogue_read_pays(caps, links, want):
        return links  # the whole catalogue in pages costs fewer calls than today's id batches
    # By id, in whole batches: today's share rounded down to a whole batch, and more only for
    # the products that would otherwise go unread past sweep_days (see _by_id_share).
    want = _by_id_share(ctx, now, days, links, want)
    if left is None:  # a leaky bucket refills: no day budget to keep within
        return want
    calls_per_batch = 1 if caps.stock_in_product else 2
    return min(want, (left // calls_per_batch) * (caps.lookup_batch or links))


def _by_id_share(ctx: JobContext, now: datetime, days: float, links: int, share: int) -> int:
    """Products a sweep by id checks tonight: ``share`` (today's seventh, less what earlier
    sweeps did today) rounded down to whole batches, or, when more, every product no pull or
    sweep has read for ``days`` - 1 days (by the next night it would be past ``days``),
    rounded up: the last batch filled with the next oldest costs no call. A seventh rounded
    up left a part-batch every night (R-Series, 5,000 products: 715 by id, 8 calls, where 7
    batches of 100 and the pulls' reads, each stamping the product, cover the week)."""
    batch = ctx.connector.capabilities.lookup_batch or links
    with ctx.store.session() as s:
        due = count_links_unchecked_since(s, ctx.connection.id, now - timedelta(days=days - 1))
    want = max(due, share // batch * batch)
    return min(links, math.ceil(want / batch) * batch)


def _catalogue_read_calls(caps: Capabilities, links: int) -> int:
    """Calls to list the whole catalogue (and its stock) page by page."""
    pages = max(1, math.ceil(links / (caps.catalogue_page or 1)))
    return pages * (1 if caps.stock_in_product else 2)


def _catalogue_read_pays(caps: Capabilities, links: int, n: int) -> bool:
    """Whether listing the whole catalogue costs fewer calls than fetching ``n`` products by id
    (Unleashed: 5,000 products and their stock are 5 + 5 pages of 1,000, while 715 ids are 8 + 8
    batches of 100). At equal cost the id batches win: a sweep then checks what was asked."""
    if not caps.catalogue_page or not caps.lookup_batch or caps.full_catalogue_call:
        return False
    by_id = math.ceil(min(n, links) / caps.lookup_batch) * (1 if caps.stock_in_product else 2)
    return _catalogue_read_calls(caps, links) < by_id


def sweep_oldest(ctx: JobContext, n: int) -> SweepReport:
    """Re-check the ``n`` linked products synced longest ago, in the provider's largest batches.

    Products the provider no longer returns are marked ``ghost``; those it returns archived are
    marked ``archived``; both are listed. Every swept link is stamped, so repeated sweeps rotate
    through the whole catalogue.
    """
    started = time.perf_counter()
    report = SweepReport(requested=n, dry_run=ctx.dry_run)
    connector = ctx.connector
    report.swept_by_pull = swept_by_pull(ctx)
    if report.swept_by_pull is not None:
        # Every pull reads the whole catalogue and flags what is gone from it, and one every
        # sweep_days compares it all as this sweep would: nothing is left to call for.
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    with ctx.store.session() as s:
        links = count_product_links(s, ctx.connection.id)
    if n > 0 and _catalogue_read_pays(connector.capabilities, links, n):
        _sweep_catalogue(ctx, report)
        report.calls = ctx.calls
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    with ctx.store.session() as s:
        picked = [
            (lk.id, lk.remote_id, lk.local_id) for lk in oldest_links(s, ctx.connection.id, KIND, n)
        ]
    batch = connector.capabilities.lookup_batch or max(1, len(picked))
    for chunk in chunks(picked, batch):
        read_at = ctx.clock.now()  # before the call: what it answers is at least this new
        remote = {p.remote_id: p for p in connector.get_products([rid for _, rid, _ in chunk])}
        now = ctx.clock.now()
        with ctx.writing() as s:
            applier = _Applier(ctx, s, now, report.changes, authoritative=True, read_at=read_at)
            counter = PullReport()
            applier.apply_products([remote[rid] for _, rid, _ in chunk if rid in remote], counter)
            report.changed += counter.changed
            report.future_stamps += counter.future_stamps
            for link_id, rid, local_id in chunk:
                link = s.get(Link, link_id)
                product = s.get(Product, local_id)
                sku = product.sku if product else rid
                if rid not in remote:
                    report.ghosts.append({"sku": sku, "remote_id": rid, "state": "ghost"})
                    if not ctx.dry_run and link is not None:
                        link.state = "ghost"
                        if product is not None and product.active:
                            _deactivate(ctx, s, product, now)
                elif not remote[rid].active:
                    report.ghosts.append({"sku": sku, "remote_id": rid, "state": "archived"})
                if not ctx.dry_run and link is not None:
                    link.last_synced_at = now
            report.swept += len(chunk)
            if ctx.dry_run:
                s.rollback()
        ctx.heartbeat()
    report.calls = ctx.calls
    report.seconds = round(time.perf_counter() - started, 3)
    return report


STOCK_SWEEP = "stock-sweep"  # cursor: when a sweep last listed every stock position
# cursor: when a sweep last listed the whole catalogue, read whole and checked for ghosts
CATALOGUE_SWEEP = "catalogue-sweep"


def _sweep_days(ctx: JobContext) -> float:
    return float((ctx.connection.settings or {}).get("sweep_days") or 7)


def _due(ctx: JobContext, stream: str, now: datetime, days: float) -> bool:
    with ctx.store.session() as s:
        cursor = get_cursor(s, ctx.connection.id, stream)
    # half a day's slack: a daily cron that starts a few minutes late still lists it on day 7
    return (
        cursor is None or cursor.value is None or now - cursor.value >= timedelta(days=days - 0.5)
    )


def _stock_sweep_due(ctx: JobContext, now: datetime) -> bool:
    return _due(ctx, STOCK_SWEEP, now, _sweep_days(ctx))


def _catalogue_sweep_due(ctx: JobContext, now: datetime, days: float) -> bool:
    return _due(ctx, CATALOGUE_SWEEP, now, days)


def _sweep_catalogue(ctx: JobContext, report: SweepReport) -> None:
    """Sweep every linked product by listing the whole catalogue (and its stock) page by page.

    Chosen when that costs fewer calls than the id batches would. Each page is applied like a
    pull page (which stamps the links it saw); a product missing from a complete, plausible
    listing has vanished once a look-up by id does not find it either, so it is flagged as a
    ghost, like the pull does after Xero's one-call catalogue. The pull's cursors do not move:
    this is a check, not a pull. A listing read whole and checked moves ``catalogue-sweep``, so
    ``sweep-oldest auto`` lists again only once ``sweep_days`` have passed.

    Stock positions, a separate list with its own timestamps that every pull reads, are listed
    only once per ``sweep_days`` (their own coverage aim).
    """
    connector = ctx.connector
    caps = connector.capabilities
    seen: set[str] = set()
    errors: list[str] = []
    streams: list[tuple[str, Callable[[datetime | None], Any]]] = [
        ("products", connector.changed_products)
    ]
    started = ctx.clock.now()
    if not caps.stock_in_product and _stock_sweep_due(ctx, started):
        streams.append(("stock", connector.changed_stock))
    for stream, fetch in streams:
        for page in timed_pages(ctx.clock, lambda: ctx.calls, partial(fetch, None)):
            now = ctx.clock.now()
            with ctx.writing() as s:
                applier = _Applier(
                    ctx, s, now, report.changes, started, authoritative=True, read_at=page.read_at
                )
                counter = PullReport()
                if stream == "products":
                    applier.apply_products(page.records, counter)
                    if page.relisted:
                        seen.clear()  # the listing is read again: only that read counts
                    seen.update(r.remote_id for r in page.records)
                    inactive = [r for r in page.records if not r.active]
                    if inactive:
                        linked = links_for(
                            s, ctx.connection.id, KIND, [r.remote_id for r in inactive]
                        )
                        report.ghosts.extend(
                            {"sku": r.code, "remote_id": r.remote_id, "state": "archived"}
                            for r in inactive
                            if r.remote_id in linked
                        )
                else:
                    applier.apply_stock(page.records, counter)
                report.changed += counter.changed
                report.future_stamps += counter.future_stamps
                errors.extend(page.errors)
                if ctx.dry_run:
                    s.rollback()
            ctx.heartbeat()
        if stream == "stock" and not errors and not ctx.dry_run:
            with ctx.writing() as s:  # every stock page read: the next is due in a week
                advance_cursor(s, ctx.connection.id, STOCK_SWEEP, started, ctx.clock.now())
    with ctx.store.session() as s:
        total = count_product_links(s, ctx.connection.id)
    flagged = PullReport(dry_run=ctx.dry_run)
    if errors:
        # an unreadable record may be one of ours: nothing is a ghost on this evidence
        log.warning("ghost check skipped: the catalogue had %d unreadable records", len(errors))
    elif not _plausible_catalogue(ctx, len(seen)):
        log.warning(
            "ghost check skipped: the provider listed %d products, under half of those linked",
            len(seen),
        )
    else:
        _flag_missing(ctx, seen, flagged)
        if not ctx.dry_run:  # read whole and checked: the next listing is due in sweep_days
            with ctx.writing() as s:
                advance_cursor(s, ctx.connection.id, CATALOGUE_SWEEP, started, ctx.clock.now())
    report.ghosts.extend(flagged.ghosts)
    # what the look-up by id found and applied (a product re-coded, say) is the sweep's too
    report.changes.extend(flagged.changes)
    report.changed += flagged.changed
    report.future_stamps += flagged.future_stamps
    report.swept = total


def _deactivate_ghost(ctx: JobContext, link_id: int, report: ProductSyncReport) -> None:
    now = ctx.clock.now()
    with ctx.writing() as s:
        stored = s.get(Link, link_id)
        product = s.get(Product, stored.local_id) if stored is not None else None
        if product is not None and product.active:
            report.changes.append(Change(product.sku, "active", True, False))
            report.after = {**(report.before or {}), "active": False}
        if ctx.dry_run or stored is None:
            return
        stored.state = "ghost"
        stored.last_synced_at = now
        if product is not None and product.active:
            _deactivate(ctx, s, product, now)
            product.updated_at = now


def _deactivate(ctx: JobContext, s: Any, product: Product, now: datetime) -> None:
    """A product the provider no longer has: inactive locally, and the change an event."""
    record_event(
        s,
        run_id=ctx.run_id,
        connection_id=ctx.connection.id,
        kind=KIND,
        local_id=product.id,
        field="active",
        old=True,
        new=False,
        at=now,
    )
    product.active = False


def sync_product(ctx: JobContext, sku: str) -> ProductSyncReport:
    """One product and its stock, in at most 2 calls; shows before and after."""
    with ctx.store.session() as s:
        local = product_by_sku(s, ctx.connection.id, sku)
        before = snapshot(local)
        link = None
        if local is not None:
            link = link_by_local(s, ctx.connection.id, KIND, local.id)
        remote_id = link.remote_id if link else None
    remote: RemoteProduct | None
    read_at = ctx.clock.now()  # before the call: what it answers is at least this new
    if remote_id:
        found = ctx.connector.get_products([remote_id])
        remote = found[0] if found else None
    else:
        remote = ctx.connector.find_product(sku)
    report = ProductSyncReport(
        sku=sku, before=before, after=before, found=remote is not None, dry_run=ctx.dry_run
    )
    if remote is None:
        if link is not None:
            # A linked product its provider no longer has, looked up by id: a ghost, as the
            # sweep finds it (the link marked, the product deactivated, the change an event).
            report.deleted = True
            _deactivate_ghost(ctx, link.id, report)
        report.calls = ctx.calls
        return report
    with ctx.writing() as s:
        applier = _Applier(
            ctx, s, ctx.clock.now(), report.changes, authoritative=True, read_at=read_at
        )
        counter = PullReport()
        applier.apply_products([remote], counter)
        report.future_stamps = counter.future_stamps
        if ctx.dry_run:
            s.rollback()
            after = dict(before or {"sku": sku})
            for change in report.changes:
                if change.field != "new":
                    after[change.field] = change.new
            if before is None:
                after.update(
                    name=remote.name,
                    description=remote.description,
                    price=remote.price,
                    stock=remote.stock,
                    active=remote.active,
                )
            report.after = after
        else:
            s.flush()
            report.after = snapshot(product_by_sku(s, ctx.connection.id, sku))
    report.calls = ctx.calls
    return report
