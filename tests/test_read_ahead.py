"""The pull's read-ahead: pages come in order, joined into batches of about 1,000 records, while
the next batch is fetched, never more; and the budget check it makes meanwhile does not wait for
the batch being written."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from synccli.connectors.base import Limits, Page
from synccli.connectors.http import CallRecord
from synccli.errors import BudgetExhausted
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.ledger import StoreLedger
from synccli.store.models import ApiCall, Budget
from synccli.sync.stream import read_ahead


def _pages(fetched: list[int], count: int, size: int = 100) -> Iterator[Page[int]]:
    for n in range(1, count + 1):
        fetched.append(n)
        yield Page(list(range(size)), number=n)


def test_pages_come_in_order_in_batches_with_at_most_one_batch_ahead() -> None:
    fetched: list[int] = []
    seen: list[list[int]] = []
    for batch in read_ahead(_pages(fetched, 25), size=1000):
        seen.append([page.number for page in batch])
        time.sleep(0.05)  # applying: the worker fetches the next batch meanwhile, then stops
        # the next batch (10 pages) and the page in flight, never more
        assert max(fetched) <= batch[-1].number + 11
    assert seen == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]


def test_a_slow_provider_s_pages_are_let_go_without_a_full_batch() -> None:
    def slow() -> Iterator[Page[int]]:
        for n in range(1, 4):
            time.sleep(0.2)
            yield Page([n], number=n)

    batches = [[p.number for p in batch] for batch in read_ahead(slow(), size=1000, linger=0.05)]
    assert batches == [[1], [2], [3]]


def test_a_failed_fetch_reaches_the_consumer_after_the_pages_before_it() -> None:
    def pages() -> Iterator[Page[int]]:
        yield Page([1], number=1)
        raise RuntimeError("page 2 unreadable")

    seen = []
    with pytest.raises(RuntimeError, match="page 2 unreadable"):
        for batch in read_ahead(pages()):
            seen.extend(page.number for page in batch)
    assert seen == [1]


def test_stopping_early_fetches_one_batch_beyond_at_most() -> None:
    fetched: list[int] = []
    with pytest.raises(ValueError):
        for batch in read_ahead(_pages(fetched, 100), size=1000):
            if batch[-1].number == 20:
                time.sleep(0.05)
                raise ValueError("applying pages 11-20 failed")
    assert max(fetched) <= 31  # pages 21-30 and the one in flight
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


def test_budget_check_does_not_wait_for_a_page_being_written(store: Store) -> None:
    add_connection(store, "shop", "xero", {}, {}, None)
    conn = get_connection(store, "shop")
    ledger = StoreLedger(store, conn.id, Limits(per_day=5000))
    writer = store.engine.raw_connection()
    done = threading.Event()
    try:
        writer.cursor().execute("BEGIN IMMEDIATE")  # a page being applied holds the write lock
        checker = threading.Thread(
            target=lambda: (ledger.check(datetime.now(UTC), 1.0), done.set()), daemon=True
        )
        checker.start()
        checker.join(timeout=10)  # it would wait up to busy_timeout (30 s) for the lock
        assert done.is_set()
    finally:
        writer.rollback()
        writer.close()


def test_calls_recorded_while_a_batch_is_written_do_not_wait_and_still_count(
    store: Store,
) -> None:
    add_connection(store, "shop", "xero", {}, {}, None)
    conn = get_connection(store, "shop")
    ledger = StoreLedger(store, conn.id, Limits(per_day=3))
    now = datetime.now(UTC)
    writer = store.engine.raw_connection()
    try:
        writer.cursor().execute("BEGIN IMMEDIATE")  # a batch being applied holds the write lock
        with ledger.deferred():
            done = threading.Event()

            def fetch() -> None:
                for n in range(3):
                    ledger.record(CallRecord(now, "GET", f"/Items?page={n}", 200, 5, 1.0, {}))
                done.set()

            fetcher = threading.Thread(target=fetch, daemon=True)
            fetcher.start()
            fetcher.join(timeout=10)  # waiting for the lock would take busy_timeout (30 s)
            assert done.is_set()
            with pytest.raises(BudgetExhausted, match="3 made today"):
                ledger.check(now, 1.0)  # the three calls kept back count against the day
            writer.rollback()  # the batch commits; the block's end writes what was kept
    finally:
        writer.close()
    with store.session() as s:
        paths = s.scalars(select(ApiCall.path).order_by(ApiCall.id)).all()
    assert paths == ["/Items?page=0", "/Items?page=1", "/Items?page=2"]


def test_outside_a_pull_a_call_is_written_at_once(store: Store) -> None:
    add_connection(store, "shop", "xero", {}, {}, None)
    conn = get_connection(store, "shop")
    ledger = StoreLedger(store, conn.id, Limits(per_day=5000))
    ledger.record(CallRecord(datetime.now(UTC), "GET", "/Items", 200, 5, 1.0, {"day": 4999}))
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ApiCall)) == 1
        assert s.get(Budget, conn.id).remaining == {"day": 4999}
