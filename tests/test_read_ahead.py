"""The pull's read-ahead: the next page is fetched while one is applied, never more, in order; and
the budget check it makes meanwhile does not wait for the page being written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from synccli.connectors.base import Limits
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.ledger import StoreLedger
from synccli.sync.products import read_ahead


def test_pages_come_in_order_with_at_most_one_in_flight() -> None:
    fetched: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(1, 6):
            fetched.append(n)
            yield n

    seen = []
    for page in read_ahead(pages()):
        seen.append(page)
        # while page n is applied, page n+1 may be on its way, but never n+2
        assert max(fetched) <= page + 1
    assert seen == [1, 2, 3, 4, 5]


def test_a_failed_fetch_reaches_the_consumer_after_the_pages_before_it() -> None:
    def pages() -> Iterator[int]:
        yield 1
        raise RuntimeError("page 2 unreadable")

    seen = []
    with pytest.raises(RuntimeError, match="page 2 unreadable"):
        for page in read_ahead(pages()):
            seen.append(page)
    assert seen == [1]


def test_stopping_early_fetches_one_page_beyond_at_most() -> None:
    fetched: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(1, 100):
            fetched.append(n)
            yield n

    with pytest.raises(ValueError):
        for page in read_ahead(pages()):
            if page == 3:
                raise ValueError("applying page 3 failed")
    assert max(fetched) <= 4


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
