"""Claims of product links lock them in one order, so two jobs claiming overlapping links cannot
deadlock on PostgreSQL.

A product job claims a batch's links for its read (``catalogue.claim_reads``) inside its write
transaction, and other jobs of the same connection (a pull and a sweep, each under its own
lease) claim overlapping links meanwhile. Were each to lock them in the order its records came
(chunk after chunk, read time after read time), two transactions could each hold a link the
other waits for: PostgreSQL ends one of them (40P01) and its run fails. Every claim takes its
links' row locks in remote-id order first, so whichever transaction waits holds none of the
links that sort after the one it waits for.

Each test holds the row lock of the link that sorts first from a session of its own, starts a
claim that includes it (last, after links that sort later) in a thread, and waits until that
claim waits for the held lock. A second claim of one of the later links must then go through at
once (a short ``lock_timeout`` says whether it waited): had the first claim already locked it,
the two would be one lock away from a deadlock.

- a claim of more than one chunk, the link that sorts first in its last chunk:
  test_a_claim_waiting_for_a_link_holds_none_that_sort_after_it
- a batch whose links were read at two times (one claim a read time), the later read's link
  sorting first: test_a_batch_claimed_at_two_read_times_holds_none_that_sort_after_the_awaited
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg.errors
import pytest
from fakes import FakeProvider
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from test_job_lease_fence import CLOCK, START, run_job

from synccli.connectors.base import RemoteProduct
from synccli.store.bulk import CHUNK
from synccli.store.catalogue import claim_reads
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import Link, Product
from synccli.sync import products
from synccli.sync.context import JobContext

pytestmark = pytest.mark.postgres

READ = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = READ + timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def linked(store: Store, conn_id: int, remote_ids: Sequence[str]) -> None:
    """A product and its link for each remote id (the SKU is the remote id), read at no time."""
    with store.session() as s:
        rows = [Product(connection_id=conn_id, sku=rid, name=rid) for rid in remote_ids]
        s.add_all(rows)
        s.flush()
        s.add_all(
            Link(
                connection_id=conn_id,
                kind="product",
                local_id=p.id,
                remote_id=p.sku,
                created_at=READ,
            )
            for p in rows
        )


def read_times(store: Store, conn_id: int) -> dict[str, datetime | None]:
    with store.read_session() as s:
        rows = s.execute(select(Link.remote_id, Link.read_at).where(Link.connection_id == conn_id))
        return {rid: at for rid, at in rows}


Note = Callable[[Session], None]


@contextmanager
def waiting_behind(
    store: Store, remote_id: str, claim: Callable[[Note], Any]
) -> Iterator[list[Any]]:
    """Hold ``remote_id``'s link locked from a session of its own, run ``claim`` in a thread
    until it waits for that lock, and yield while it waits a list that holds ``claim``'s answer
    once the block ends (the lock released, the thread joined). ``claim`` is handed ``note``,
    to call with its session before it claims (the session's server process is the one to
    watch)."""
    answer: list[Any] = []
    failed: list[BaseException] = []
    pids: list[int] = []

    def note(s: Session) -> None:
        pids.append(s.scalar(text("SELECT pg_backend_pid()")))

    def run() -> None:
        try:
            answer.append(claim(note))
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    with store.engine.connect() as holder, store.engine.connect() as probe:
        holder_pid = holder.scalar(text("SELECT pg_backend_pid()"))
        held = holder.scalar(
            text("SELECT id FROM links WHERE remote_id = :rid FOR UPDATE"), {"rid": remote_id}
        )
        assert held is not None
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            # Polled, not slept on: the claim waits on the lock from the moment it asks for it
            # (pg_blocking_pids then names the holder), and nothing else takes that lock.
            deadline = time.monotonic() + 60
            while True:
                assert not failed, failed
                assert time.monotonic() < deadline, "the claim never waited for the held link"
                if pids:
                    blockers = probe.scalar(text("SELECT pg_blocking_pids(:pid)"), {"pid": pids[0]})
                    probe.rollback()
                    if holder_pid in blockers:
                        break
                time.sleep(0.01)
            yield answer
        finally:
            holder.rollback()
            thread.join(60)
    assert not thread.is_alive(), "the claim still waits after the held lock was released"
    if failed:
        raise failed[0]


def claims_at_once(store: Store, conn_id: int, remote_id: str, read_at: datetime) -> set[str]:
    """Another job's claim of ``remote_id``, giving up after a second's wait for a lock."""
    try:
        with store.session() as s:
            s.execute(text("SET LOCAL lock_timeout = '1s'"))
            return claim_reads(s, conn_id, [remote_id], read_at)
    except OperationalError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            pytest.fail(
                f"the claim waiting for another link already holds {remote_id}'s lock: "
                f"two such claims can deadlock ({exc.orig})"
            )
        raise


def test_a_claim_waiting_for_a_link_holds_none_that_sort_after_it(pg_store: Store) -> None:
    add_connection(pg_store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s"})
    conn_id = get_connection(pg_store, "shop").id
    first = "a-0000"
    after = [f"z-{i:04d}" for i in range(CHUNK)]  # a whole chunk of links sorting after it
    linked(pg_store, conn_id, [first, *after])
    other = after[100]

    def claim(note: Note) -> set[str]:
        with pg_store.session() as s:
            note(s)
            return claim_reads(s, conn_id, [*after, first], READ)

    with waiting_behind(pg_store, first, claim) as answer:
        assert claims_at_once(pg_store, conn_id, other, LATER) == {other}
    # The waiting claim then found the later read the other one stored, and left that link.
    assert answer == [{first, *after} - {other}]
    assert read_times(pg_store, conn_id) == {
        first: READ,
        **dict.fromkeys(after, READ),
        other: LATER,
    }


def test_a_batch_claimed_at_two_read_times_holds_none_that_sort_after_the_awaited(
    pg_store: Store,
) -> None:
    fake = FakeProvider("xero", clock=CLOCK)
    conn = fake.add_connection(pg_store)
    first, after = "a-1", "z-1"
    linked(pg_store, conn.id, [first, after])
    # A pull's batch of two pages, each read at its own time (one claim a read time, in the
    # batch's order): the first page's record sorts after the second's.
    records = [
        RemoteProduct(after, after, after, price=Decimal("2.00")),
        RemoteProduct(first, first, first, price=Decimal("3.00")),
    ]
    read_at = {after: READ, first: READ + timedelta(seconds=1)}

    def pull(note: Note, ctx: JobContext) -> set[str] | None:
        with ctx.writing() as s:
            note(s)
            applier = products._Applier(ctx, s, CLOCK.now(), [], read_at=read_at)
            applier.apply_products(records, products.PullReport())
            return applier.claimed

    def claim(note: Note) -> set[str] | None:
        return run_job(pg_store, "pull-products", conn, fake.factory, partial(pull, note))

    with waiting_behind(pg_store, first, claim) as answer:
        assert claims_at_once(pg_store, conn.id, after, LATER) == {after}
    # The pull then found the later read of ``after`` stored, and applied only ``first``.
    assert answer == [{first}]
    assert read_times(pg_store, conn.id) == {first: READ + timedelta(seconds=1), after: LATER}
    with pg_store.read_session() as s:
        prices = {sku: price for sku, price in s.execute(select(Product.sku, Product.price))}
    assert prices == {first: Decimal("3.00"), after: None}
