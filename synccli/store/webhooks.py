"""Webhook deliveries in the store (#23): each pushed change stored once, and per-day counts.

The receiver writes here and nothing else; the jobs read what is pending and mark it done. A
provider retries a delivery it thinks failed (a timeout, a 5xx, a receiver killed mid-request),
so every insert is "unless the same event is there already", decided by the unique key
(connection, dedup key) inside the database: two receivers, or a retry racing the original,
never store an event twice and never fail on each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from synccli.clock import utc
from synccli.store.bulk import chunks
from synccli.store.models import Connection, WebhookDay, WebhookEventRow
from synccli.webhooks.events import WebhookEvent

OPEN_STATES = ("pending", "hint")  # something left to do: a record to apply, an id to fetch
FINAL_STATES = ("applied", "done")
KEY_LENGTH = 255  # webhook_events.dedup_key


@dataclass(frozen=True)
class WebhookStats:
    """What ``webhooks status`` shows for one connection."""

    last_delivery_at: datetime | None
    deliveries_today: int
    rejected_today: int
    pending_records: int  # changes whose record came with them, not applied yet
    pending_hints: int  # ids the next pull fetches


def _dialect(s: Session) -> str:
    return "postgresql" if s.get_bind().dialect.name == "postgresql" else "sqlite"


@cache
def _insert_events(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once: a receiver runs it for every
    delivery, and building and compiling it afresh each time was most of a delivery's cost."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = WebhookEventRow.__table__
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=["connection_id", "dedup_key"])
        .returning(table.c.connection_id, table.c.dedup_key)
    )


@cache
def _bump_day(dialect: str) -> Any:
    """Add to a connection's counts of the day (the row made by the first): one statement, built
    once, for deliveries and rejections alike."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = WebhookDay.__table__
    statement = insert(table)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["connection_id", "day"],
        set_={
            "deliveries": table.c.deliveries + new.deliveries,
            "rejected": table.c.rejected + new.rejected,
            "last_delivery_at": func.coalesce(new.last_delivery_at, table.c.last_delivery_at),
        },
    )


def stored_key(dedup_key: str) -> str:
    """The key as stored: a key longer than the column is replaced by its digest (stable, so a
    retry of that event still meets it)."""
    if len(dedup_key) <= KEY_LENGTH:
        return dedup_key
    return "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()


def record_events(s: Session, events: Iterable[WebhookEvent], received_at: datetime) -> int:
    """Store ``events`` unless stored already (same connection and dedup key); returns how many
    rows are new. A record-carrying event starts ``pending``, an id-only one ``hint``."""
    events = list(events)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for event in events:
        key = stored_key(event.dedup_key)
        rows.setdefault(
            (event.connection_id, key),
            {
                "connection_id": event.connection_id,
                "stream": event.stream,
                "entity_id": event.entity_id,
                "dedup_key": key,
                "version": event.version,
                "occurred_at": utc(event.occurred_at),
                "received_at": received_at,
                "record": event.record,
                "state": "pending" if event.record is not None else "hint",
                "applied_at": None,
            },
        )
    if not rows:
        return 0
    statement = _insert_events(_dialect(s))
    connection = s.connection()  # Core, not the ORM's bulk machinery: the same rows, faster
    new: set[tuple[int, str]] = set()
    for chunk in chunks(list(rows.values())):
        new.update((cid, key) for cid, key in connection.execute(statement, list(chunk)))
    again = _changed_back(s, events, new, received_at)
    if again:
        new.update((cid, key) for cid, key in connection.execute(statement, again))
    return len(new)


def _changed_back(
    s: Session, events: Iterable[WebhookEvent], new: set[tuple[int, str]], received_at: datetime
) -> list[dict[str, Any]]:
    """A payload known only by its digest, met again after its first copy was applied: a retry
    cannot be told from the record changing back (stock 10 -> 7 -> 10), so it is stored once
    more, as an id to fetch (the provider says which it is), under a key of its arrival."""
    again: dict[tuple[int, str], dict[str, Any]] = {}
    for event in events:
        key = stored_key(event.dedup_key)
        if not event.by_payload or (event.connection_id, key) in new:
            continue
        state = s.scalar(
            select(WebhookEventRow.state).where(
                WebhookEventRow.connection_id == event.connection_id,
                WebhookEventRow.dedup_key == key,
            )
        )
        if state in FINAL_STATES:
            arrival = stored_key(f"{event.dedup_key}@{utc(received_at).isoformat()}")
            again[(event.connection_id, arrival)] = {
                "connection_id": event.connection_id,
                "stream": event.stream,
                "entity_id": event.entity_id,
                "dedup_key": arrival,
                "version": event.version,
                "occurred_at": utc(event.occurred_at),
                "received_at": received_at,
                "record": event.record,
                "state": "hint",
                "applied_at": None,
            }
    return list(again.values())


def pending_events(
    s: Session, connection_id: int, stream: str, limit: int
) -> list[WebhookEventRow]:
    """The connection's open events of ``stream`` (``pending`` and ``hint``), oldest first."""
    return list(
        s.scalars(
            select(WebhookEventRow)
            .where(
                WebhookEventRow.connection_id == connection_id,
                WebhookEventRow.stream == stream,
                WebhookEventRow.state.in_(OPEN_STATES),
            )
            .order_by(WebhookEventRow.id)
            .limit(limit)
        )
    )


def mark_done(s: Session, ids: Sequence[int], state: str, now: datetime | None = None) -> int:
    """Close events (``applied``: the record was applied; ``done``: fetched, or superseded).
    Only open rows move, so two runs closing the same rows count each once. Returns how many."""
    if state not in FINAL_STATES:
        raise ValueError(f"mark_done: state must be one of {FINAL_STATES}, not {state!r}")
    if not ids:
        return 0
    moved = 0
    for chunk in chunks(list(ids)):
        result = s.execute(
            update(WebhookEventRow)
            .where(WebhookEventRow.id.in_(chunk), WebhookEventRow.state.in_(OPEN_STATES))
            .values(state=state, applied_at=now or datetime.now(UTC))
            .returning(WebhookEventRow.id),
            # one statement, not an evaluation over every row the session loaded: the write lock
            # is held while this runs, and the receiver's inserts wait behind it (SQLite)
            execution_options={"synchronize_session": False},
        )
        moved += len(result.all())
    return moved


def _day(at: datetime) -> str:
    return utc(at).date().isoformat()


def _bump(s: Session, connection_id: int, at: datetime, column: str, by: int = 1) -> None:
    values: dict[str, Any] = {"connection_id": connection_id, "day": _day(at)}
    values.update(deliveries=0, rejected=0, last_delivery_at=None)
    values[column] = by
    if column == "deliveries":
        values["last_delivery_at"] = at
    s.connection().execute(_bump_day(_dialect(s)), values)


def record_delivery(s: Session, connection_id: int, at: datetime) -> None:
    """Count a signed delivery accepted for the connection (a retry too: the hook is alive)."""
    _bump(s, connection_id, at, "deliveries")


def count_rejected(s: Session, connection_id: int, at: datetime, count: int = 1) -> None:
    """Count requests refused for a bad or missing signature."""
    _bump(s, connection_id, at, "rejected", count)


def last_delivery_at(s: Session, connection_id: int, stream: str | None = None) -> datetime | None:
    """When the connection's last delivery came: of ``stream`` (its newest stored event), or of
    anything (any accepted delivery, a retry or an empty one included)."""
    events = select(func.max(WebhookEventRow.received_at)).where(
        WebhookEventRow.connection_id == connection_id
    )
    if stream is not None:
        return s.scalar(events.where(WebhookEventRow.stream == stream))
    days = select(func.max(WebhookDay.last_delivery_at)).where(
        WebhookDay.connection_id == connection_id
    )
    found = [utc(at) for at in (s.scalar(events), s.scalar(days)) if at is not None]
    return max(found) if found else None


def webhook_stats(s: Session, connection_id: int, now: datetime) -> WebhookStats:
    day = s.get(WebhookDay, (connection_id, _day(now)))
    open_counts: dict[str, int] = {
        state: count
        for state, count in s.execute(
            select(WebhookEventRow.state, func.count())
            .where(
                WebhookEventRow.connection_id == connection_id,
                WebhookEventRow.state.in_(OPEN_STATES),
            )
            .group_by(WebhookEventRow.state)
        )
    }
    return WebhookStats(
        last_delivery_at=last_delivery_at(s, connection_id),
        deliveries_today=day.deliveries if day else 0,
        rejected_today=day.rejected if day else 0,
        pending_records=open_counts.get("pending", 0),
        pending_hints=open_counts.get("hint", 0),
    )


@cache
def _names() -> Any:
    """SELECT id, name FROM connections WHERE id IN (...), built once (Core, not the ORM): the
    receiver runs it for every delivery."""
    table = Connection.__table__
    return select(table.c.id, table.c.name).where(table.c.id.in_(bindparam("ids", expanding=True)))


def connection_names(s: Session, ids: Iterable[int]) -> dict[int, str]:
    """The names of the connections ``ids`` that exist (a removed one is left out)."""
    rows = s.connection().execute(_names(), {"ids": list(ids)})
    return {cid: name for cid, name in rows}


def webhook_connections(s: Session, providers: Sequence[str]) -> list[Connection]:
    """The connections of ``providers`` (the receiver's directory; credentials still sealed)."""
    return list(s.scalars(select(Connection).where(Connection.provider.in_(list(providers)))))
