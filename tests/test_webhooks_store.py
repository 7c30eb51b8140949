"""#23: webhook deliveries stored durably and once (the storage the receiver and the jobs share)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.webhooks import (
    count_rejected,
    last_delivery_at,
    mark_done,
    pending_events,
    record_delivery,
    record_events,
    webhook_stats,
)
from synccli.webhooks.events import WebhookEvent

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _event(cid: int, entity: str, version: str, record: dict | None = None, **kw) -> WebhookEvent:
    return WebhookEvent(
        provider="lightspeed-x",
        connection_id=cid,
        stream=kw.get("stream", "products"),
        entity_id=entity,
        version=version,
        occurred_at=kw.get("at", NOW),
        record=record,
        dedup_key=f"product.update:{entity}:{version}",
    )


def _connection(store: Store, name: str = "shop") -> int:
    return add_connection(store, name, "lightspeed-x", {"domain_prefix": "shop"}, {}).id


def test_a_retry_is_stored_once_and_records_are_pending_ids_are_hints(store: Store) -> None:
    cid = _connection(store)
    first = [_event(cid, "p1", "10", {"id": "p1", "sku": "A"}), _event(cid, "p2", "11")]
    with store.session() as s:
        assert record_events(s, first, received_at=NOW) == 2
    with store.session() as s:  # the provider's retry of the same delivery
        assert record_events(s, first, received_at=NOW + timedelta(seconds=30)) == 0
    with store.session() as s:
        rows = pending_events(s, cid, "products", limit=10)
    assert [(r.entity_id, r.state, r.record) for r in rows] == [
        ("p1", "pending", {"id": "p1", "sku": "A"}),
        ("p2", "hint", None),
    ]
    assert rows[0].received_at == NOW  # the first arrival, not the retry's


def test_one_delivery_repeating_an_event_stores_it_once(store: Store) -> None:
    cid = _connection(store)
    with store.session() as s:
        assert record_events(s, [_event(cid, "p1", "10"), _event(cid, "p1", "10")], NOW) == 1


def test_mark_done_takes_rows_out_of_pending(store: Store) -> None:
    cid = _connection(store)
    with store.session() as s:
        record_events(s, [_event(cid, "p1", "10", {"id": "p1"}), _event(cid, "p2", "3")], NOW)
    with store.session() as s:
        ids = [r.id for r in pending_events(s, cid, "products", 10)]
        mark_done(s, ids[:1], "applied", now=NOW)
    with store.session() as s:
        left = pending_events(s, cid, "products", 10)
        assert [r.entity_id for r in left] == ["p2"]
        mark_done(s, [left[0].id], "done", now=NOW)
        assert pending_events(s, cid, "products", 10) == []
    with store.session() as s, pytest.raises(ValueError):
        mark_done(s, ids, "pending")


def test_pending_events_are_per_connection_and_stream(store: Store) -> None:
    a, b = _connection(store, "a"), _connection(store, "b")
    with store.session() as s:
        record_events(s, [_event(a, "p1", "1"), _event(b, "p1", "1")], NOW)
        record_events(s, [_event(a, "c1", "1", stream="customers")], NOW)
    with store.session() as s:
        assert [r.connection_id for r in pending_events(s, a, "products", 10)] == [a]
        assert [r.entity_id for r in pending_events(s, a, "customers", 10)] == ["c1"]


def test_stats_count_today_and_rejections_per_connection(store: Store) -> None:
    cid, other = _connection(store, "a"), _connection(store, "b")
    yesterday = NOW - timedelta(days=1)
    with store.session() as s:
        record_delivery(s, cid, yesterday)
        record_events(s, [_event(cid, "p0", "1", at=yesterday)], yesterday)
        record_delivery(s, cid, NOW)
        record_delivery(s, cid, NOW + timedelta(minutes=1))
        record_events(s, [_event(cid, "p1", "2"), _event(cid, "c1", "1", stream="customers")], NOW)
        count_rejected(s, cid, NOW)
        count_rejected(s, cid, NOW)
        count_rejected(s, cid, yesterday)
        count_rejected(s, other, NOW)
    with store.session() as s:
        stats = webhook_stats(s, cid, NOW + timedelta(minutes=5))
        assert stats.deliveries_today == 2
        assert stats.rejected_today == 2
        assert stats.pending_hints == 3
        assert stats.last_delivery_at == NOW + timedelta(minutes=1)
        assert last_delivery_at(s, cid, "customers") == NOW
        assert last_delivery_at(s, cid) == NOW + timedelta(minutes=1)
        assert last_delivery_at(s, other) is None


def test_concurrent_writers_of_one_event_store_it_once(store: Store) -> None:
    """Two receivers (or a retry racing the original) insert the same key at once: the unique
    key decides, neither fails."""
    cid = _connection(store)
    added: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write() -> None:
        try:
            barrier.wait()
            with store.session() as s:
                added.append(record_events(s, [_event(cid, "p1", "10")], NOW))
        except BaseException as exc:  # pragma: no cover - shown by the assert
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(added) == [0, 0, 0, 1]


@pytest.mark.postgres
def test_dedup_on_postgres(pg_store: Store) -> None:
    cid = _connection(pg_store)
    with pg_store.session() as s:
        assert record_events(s, [_event(cid, "p1", "10", {"id": "p1"})], NOW) == 1
    with pg_store.session() as s:
        assert record_events(s, [_event(cid, "p1", "10", {"id": "p1"})], NOW) == 0
        count_rejected(s, cid, NOW)
        record_delivery(s, cid, NOW)
    with pg_store.session() as s:
        stats = webhook_stats(s, cid, NOW)
        assert (stats.deliveries_today, stats.rejected_today) == (1, 1)
        assert (stats.pending_records, stats.pending_hints) == (1, 0)
