"""Products and their links: the reads and writes the product jobs (pull, sweep, sync-product)
make, as named functions over an open session (the job decides where a transaction ends).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import exists, func, or_, select, text, update
from sqlalchemy.orm import Session

from synccli.store.bulk import chunks, insert_rows, one_of, plain_rows, update_rows
from synccli.store.ledger import day_start
from synccli.store.models import ApiCall, Event, Link, Product, Run

PRODUCT = "product"  # the links' kind for products
# the mapped classes' tables, as the bulk writers take them
PRODUCTS, LINKS, EVENTS = Product.__table__, Link.__table__, Event.__table__


def plan_for_each_execution(s: Session) -> None:
    """On PostgreSQL, plan this transaction's statements for their own values.

    A page looks its rows up with IN lists of up to 500-1,000 values. psycopg prepares a
    statement run 5 times, and PostgreSQL then plans it once for any values: a plan that tests
    every row of the connection against the list one value at a time (0.5 s a query at 50,000
    products). Planned for each execution's values, the list is hashed. SET LOCAL ends with the
    transaction."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def products_by_sku(s: Session, connection_id: int, skus: Sequence[str]) -> dict[str, Product]:
    """The connection's products with these SKUs, by SKU."""
    rows = s.scalars(
        select(Product).where(
            Product.connection_id == connection_id,
            one_of(Product.sku, skus, s.get_bind().dialect),
        )
    )
    return {p.sku: p for p in rows}


def has_products(s: Session, connection_id: int) -> bool:
    """Whether the connection has a product or a product link (two index probes)."""
    product = select(Product.id).where(Product.connection_id == connection_id)
    link = select(Link.id).where(Link.connection_id == connection_id, Link.kind == PRODUCT)
    return bool(s.scalar(select(exists(product) | exists(link))))


def products_by_id(s: Session, ids: Sequence[int]) -> dict[int, Product]:
    """These products, by id."""
    found: dict[int, Product] = {}
    dialect = s.get_bind().dialect
    for chunk in chunks(ids):
        for p in s.scalars(select(Product).where(one_of(Product.id, chunk, dialect))):
            found[p.id] = p
    return found


def product_by_sku(s: Session, connection_id: int, sku: str) -> Product | None:
    return s.scalar(
        select(Product).where(Product.connection_id == connection_id, Product.sku == sku)
    )


def stamp_links(s: Session, link_ids: Sequence[int], now: datetime) -> None:
    """Mark these links synced at ``now``: one statement a chunk (a full-catalogue read stamps
    every link it saw), leaving the session's loaded links as they are."""
    dialect = s.get_bind().dialect
    for chunk in chunks(link_ids):
        s.execute(
            update(Link).where(one_of(Link.id, chunk, dialect)).values(last_synced_at=now),
            execution_options={"synchronize_session": False},
        )


def lock_product_links(s: Session, connection_id: int, remote_ids: Sequence[str]) -> None:
    """On PostgreSQL, lock these remote products' links for this transaction in the one order
    every claim takes them in: by remote id, chunk after chunk of the sorted ids, one ``SELECT
    ... ORDER BY remote_id FOR NO KEY UPDATE`` a chunk. A no-op elsewhere (SQLite has one
    writer: the transaction already holds the database's write lock).

    Two transactions claiming overlapping links each in an order of its own (its batch's, chunk
    after chunk, read time after read time) can each hold a link the other waits for, and
    PostgreSQL then ends one of them (40P01: its run fails). In one order, a transaction that
    waits for a link holds none that sort after it, so the one it waits for goes on.

    The order is that of the ids' code points, in Python (``sorted``) and in the database
    (``COLLATE "C"``: UTF-8's byte order is code point order): in the database's own collation
    (``en_US``, say) the rows of a chunk could sort otherwise than the chunks do, and two
    claims whose chunks split differently would take two links in opposite orders. The lock is
    the one a claim's ``UPDATE`` takes anyway (it changes no key column). A link the claim then
    leaves (it holds a later read) stays locked too, until the batch's transaction ends."""
    dialect = s.get_bind().dialect
    if dialect.name != "postgresql":
        return
    for chunk in chunks(sorted(set(remote_ids))):
        s.execute(
            select(Link.id)
            .where(
                Link.connection_id == connection_id,
                Link.kind == PRODUCT,
                one_of(Link.remote_id, chunk, dialect),
            )
            .order_by(Link.remote_id.collate("C"))
            .with_for_update(key_share=True)
        )


def claim_reads(
    s: Session,
    connection_id: int,
    remote_ids: Sequence[str],
    read_at: datetime,
    *,
    stock: bool = False,
    locked: bool = False,
) -> set[str]:
    """Claim these remote products' links for a read made at ``read_at`` (the reading run's
    clock just before its call), of their records (``links.read_at``) or, with ``stock``, of
    their stock figures (``links.stock_read_at``): each link that holds no later such read
    takes ``read_at``; answers the remote ids it took. A link left out holds a read made after
    this one (another job read and stored the record meanwhile, this run having stalled after
    its read), so its record, older than what the store holds, is not applied; a remote id with
    no link is not answered.

    Read times come from the clocks of the hosts that read (several may share a PostgreSQL
    store): they agree within seconds (``clock.CLOCK_TOLERANCE`` bounds it at a minute), and the
    stall this guards against is minutes. Two reads closer than the hosts' skew are as new as
    each other, and whichever claims last stands.

    The links are locked first, in remote-id order (``lock_product_links``: one statement a
    chunk, on PostgreSQL), so that two claims of overlapping links cannot deadlock; ``locked``: the
    caller has locked them so in this transaction already (a batch claimed at several read
    times locks all its links at once, then claims each time's). Then one ``UPDATE ...
    RETURNING`` a chunk, before anything of these products is read: the check and the claim are
    one statement, so on PostgreSQL a writer that claims the same links later waits for this
    transaction and then finds its read (the row lock; what it re-checks is the committed row),
    and everything this transaction then reads of them is settled. A read at the same instant
    as the stored one is applied (the same record, or one as new)."""
    if not locked:
        lock_product_links(s, connection_id, remote_ids)
    taken: set[str] = set()
    dialect = s.get_bind().dialect
    column = Link.stock_read_at if stock else Link.read_at
    for chunk in chunks(remote_ids):
        rows = s.execute(
            update(Link)
            .where(
                Link.connection_id == connection_id,
                Link.kind == PRODUCT,
                one_of(Link.remote_id, chunk, dialect),
                or_(column.is_(None), column <= read_at),
            )
            .values({column: read_at})
            .returning(Link.remote_id),
            execution_options={"synchronize_session": False},
        )
        taken.update(rows.scalars())
    return taken


class StockTarget(NamedTuple):
    """A linked product a stock row is for, as plain values."""

    link_id: int
    product_id: int
    sku: str
    stock: Decimal | None
    synced: datetime | None  # the link's last sync


def stock_targets(
    s: Session, connection_id: int, remote_ids: Sequence[str]
) -> dict[str, StockTarget]:
    """remote id -> :class:`StockTarget` of the linked products among ``remote_ids``."""
    found: dict[str, StockTarget] = {}
    dialect = s.get_bind().dialect
    for chunk in chunks(remote_ids):
        rows = s.execute(
            select(
                Link.remote_id,
                Link.id,
                Product.id,
                Product.sku,
                Product.stock,
                Link.last_synced_at,
            )
            .join(Product, Product.id == Link.local_id)
            .where(
                Link.connection_id == connection_id,
                Link.kind == PRODUCT,
                one_of(Link.remote_id, chunk, dialect),
            )
        )
        for remote_id, link_id, product_id, sku, quantity, synced in rows:
            found[remote_id] = StockTarget(link_id, product_id, sku, quantity, synced)
    return found


class LinkedProduct(NamedTuple):
    link_id: int
    remote_id: str
    product_id: int
    sku: str
    active: bool


def live_product_links(
    s: Session, connection_id: int, link_ids: Sequence[int] | None = None
) -> list[LinkedProduct]:
    """Every product link not known to be a ghost (of ``link_ids`` only, when given), with its
    product's SKU and active flag."""
    q = (
        select(Link.id, Link.remote_id, Product.id, Product.sku, Product.active)
        .join(Product, Product.id == Link.local_id)
        .where(Link.connection_id == connection_id, Link.kind == PRODUCT, Link.state != "ghost")
    )
    if link_ids is None:
        return [LinkedProduct(*row) for row in s.execute(q)]
    dialect = s.get_bind().dialect
    found: list[LinkedProduct] = []
    for chunk in chunks(link_ids):
        found.extend(
            LinkedProduct(*row) for row in s.execute(q.where(one_of(Link.id, chunk, dialect)))
        )
    return found


def product_fingerprints(
    s: Session, connection_id: int, upto: int | None = None
) -> tuple[dict[int, int], list[int]]:
    """The live product links' fingerprints: fingerprint -> link id, and the ids of the links
    that have none. Two columns a row, read as plain tuples (no ORM object): a whole-catalogue
    pull whose listing differs from the links' tally (``link_tally``) reads this for every link.
    ``upto``: only links whose id is at most this (those the tally counted)."""
    q = select(Link.fingerprint, Link.id).where(
        Link.connection_id == connection_id, Link.kind == PRODUCT, Link.state != "ghost"
    )
    if upto is not None:
        q = q.where(Link.id <= upto)
    by_fingerprint: dict[int, int] = {}
    unprinted: list[int] = []
    for fingerprint, link_id in plain_rows(s.connection(), q):
        if fingerprint is None:
            unprinted.append(link_id)
        else:
            by_fingerprint[fingerprint] = link_id
    return by_fingerprint, unprinted


# A fingerprint is a signed 64-bit integer: a sum of them overflows a BIGINT (SQLite's sum()
# then fails), so the store sums their two halves, each of which fits many times over.
HALF = 2**32


class LinkTally(NamedTuple):
    """The live product links of a connection, summed up: what a whole-catalogue listing with
    nothing changed must match, item for item."""

    links: int
    printed: int  # of them, those with a fingerprint
    total: int  # the exact sum of those fingerprints
    newest: int  # the highest link id counted (0: none)

    def holds_exactly(self, fingerprints: Sequence[int]) -> bool:
        """Whether a listing whose items have these fingerprints holds the links' own and no
        other: as many, every link with one, and the same sum. Two different sets of 64-bit
        digests with the same sum are as unlikely as one changed item keeping its digest."""
        return self.printed == self.links == len(fingerprints) and (sum(fingerprints) == self.total)


def link_tally(s: Session, connection_id: int) -> LinkTally:
    """The connection's ``LinkTally``: one row, summed by the database (reading a row a link
    into Python was a third of a quiet 200,000-item pull's CPU)."""
    fp = Link.fingerprint
    # "/" and "%" as the databases apply them to integers (truncating, the remainder taking
    # the dividend's sign, on both): fp == (fp / HALF) * HALF + fp % HALF, exactly
    links, printed, high, low, newest = s.execute(
        select(
            func.count(),
            func.count(fp),
            func.sum(fp.op("/")(HALF)),
            func.sum(fp.op("%")(HALF)),
            func.max(Link.id),
        ).where(Link.connection_id == connection_id, Link.kind == PRODUCT, Link.state != "ghost")
    ).one()
    total = int(high or 0) * HALF + int(low or 0)
    return LinkTally(links, printed, total, newest or 0)


def mark_ghosts(s: Session, link_ids: Sequence[int], now: datetime) -> None:
    """These links' products are gone at the provider."""
    s.execute(update(Link).where(Link.id.in_(link_ids)).values(state="ghost", last_synced_at=now))


def deactivate_products(s: Session, product_ids: Sequence[int], now: datetime) -> None:
    s.execute(
        update(Product).where(Product.id.in_(product_ids)).values(active=False, updated_at=now)
    )


def count_product_links(s: Session, connection_id: int, *, live_only: bool = False) -> int:
    """The connection's product links (``live_only``: less those known to be ghosts)."""
    q = (
        select(func.count())
        .select_from(Link)
        .where(Link.connection_id == connection_id, Link.kind == PRODUCT)
    )
    if live_only:
        q = q.where(Link.state != "ghost")
    return s.scalar(q) or 0


def count_links_unchecked_since(s: Session, connection_id: int, since: datetime) -> int:
    """The connection's product links no pull or sweep has read since ``since`` (or ever)."""
    return (
        s.scalar(
            select(func.count())
            .select_from(Link)
            .where(
                Link.connection_id == connection_id,
                Link.kind == PRODUCT,
                or_(Link.last_synced_at.is_(None), Link.last_synced_at < since),
            )
        )
        or 0
    )


def calls_today(s: Session, connection_id: int, now: datetime) -> int:
    """Calls the connection made since the start of ``now``'s day."""
    return (
        s.scalar(
            select(func.count())
            .select_from(ApiCall)
            .where(ApiCall.connection_id == connection_id, ApiCall.at >= day_start(now))
        )
        or 0
    )


def ok_runs_today(s: Session, connection_id: int, job: str, now: datetime) -> list[Run]:
    """The job's runs that ended well and started since the start of ``now``'s day."""
    return list(
        s.scalars(
            select(Run).where(
                Run.connection_id == connection_id,
                Run.job == job,
                Run.started_at >= day_start(now),
                Run.outcome == "ok",
            )
        )
    )


def insert_products(s: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new products (dicts with the same keys); answers their ids by SKU. One multi-row
    INSERT ... RETURNING: the new ids come back without a query."""
    inserted = insert_rows(s.connection(), PRODUCTS, rows, ("id", "sku"))
    return {sku: pid for pid, sku in inserted}


def insert_links(s: Session, rows: list[dict[str, Any]]) -> None:
    """Insert links (dicts with the same keys) in one statement."""
    insert_rows(s.connection(), LINKS, rows)


def insert_events(s: Session, rows: list[dict[str, Any]]) -> None:
    """Insert change events (rows as ``record_event`` writes them) in one statement."""
    insert_rows(s.connection(), EVENTS, rows)


def set_stock(s: Session, stock: dict[int, Decimal | None], now: datetime) -> None:
    """Products' stock (product id -> quantity), updated at ``now``: one executemany."""
    update_rows(
        s.connection(),
        PRODUCTS,
        "id",
        [{"id": pid, "stock": q, "updated_at": now} for pid, q in stock.items()],
    )
