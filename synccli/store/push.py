"""What applying pushed changes reads and writes besides the records themselves (#23).

- A stream's **last full poll**: a cursor row of its own (``polled:<stream>``) whose value is the
  poll's start and whose ``updated_at`` its end. The safety-poll cadence counts from it, and a
  pushed change older than it may already be in the store (then it is fetched, not applied).
- Events by state: the ``pending`` ones (a record to apply) and the ``hint`` ones (an id to
  fetch), oldest first; an unreadable record turned into a hint; the hints a whole poll covered.
- The newest change applied so far per entity, so an older delivery never undoes a newer one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from synccli.store.bulk import chunks
from synccli.store.models import Cursor, Link, WebhookEventRow
from synccli.store.sync_state import advance_cursor, get_cursor

POLLED = "polled:"  # cursor-row prefix: a stream's last full poll


def polled_at(s: Session, connection_id: int, stream: str) -> datetime | None:
    """When the stream's last full poll ended (None: never since pushes were applied)."""
    cursor = get_cursor(s, connection_id, POLLED + stream)
    return cursor.updated_at if cursor is not None else None


def mark_polled(
    s: Session, connection_id: int, stream: str, started: datetime, now: datetime
) -> None:
    advance_cursor(s, connection_id, POLLED + stream, started, now)


def cursor_value(s: Session, connection_id: int, stream: str) -> datetime | None:
    cursor = get_cursor(s, connection_id, stream)
    return cursor.value if cursor is not None else None


def cursor_updated(s: Session, connection_id: int, stream: str) -> datetime | None:
    cursor = s.get(Cursor, (connection_id, stream))
    return cursor.updated_at if cursor is not None else None


def events_in(
    s: Session, connection_id: int, streams: Sequence[str], state: str, limit: int
) -> list[WebhookEventRow]:
    """The connection's events of ``streams`` in ``state``, oldest first."""
    return list(
        s.scalars(
            select(WebhookEventRow)
            .where(
                WebhookEventRow.connection_id == connection_id,
                WebhookEventRow.stream.in_(list(streams)),
                WebhookEventRow.state == state,
            )
            .order_by(WebhookEventRow.id)
            .limit(limit)
        )
    )


def still_pending(s: Session, ids: Sequence[int]) -> set[int]:
    """Which of these events are still ``pending`` (read before the write lock was taken)."""
    found: set[int] = set()
    for chunk in chunks(list(ids)):
        found.update(
            s.scalars(
                select(WebhookEventRow.id).where(
                    WebhookEventRow.id.in_(chunk), WebhookEventRow.state == "pending"
                )
            )
        )
    return found


def to_hints(s: Session, ids: Iterable[int]) -> None:
    """Events whose record cannot be applied from the payload: their ids are fetched instead."""
    for chunk in chunks(list(ids)):
        s.execute(
            update(WebhookEventRow)
            .where(WebhookEventRow.id.in_(chunk), WebhookEventRow.state == "pending")
            .values(state="hint"),
            execution_options={"synchronize_session": False},
        )


def hints_covered(
    s: Session, connection_id: int, streams: Sequence[str], before: datetime, now: datetime
) -> int:
    """Close the hints received before ``before``, a whole poll's start: it read them."""
    result = s.execute(
        update(WebhookEventRow)
        .where(
            WebhookEventRow.connection_id == connection_id,
            WebhookEventRow.stream.in_(list(streams)),
            WebhookEventRow.state == "hint",
            WebhookEventRow.received_at <= before,
        )
        .values(state="done", applied_at=now)
        .returning(WebhookEventRow.id)
    )
    return len(result.all())


def applied_versions(
    s: Session, connection_id: int, stream: str, entity_ids: Sequence[str]
) -> dict[str, list[tuple[str | None, datetime, dict | None]]]:
    """Per entity, the (version, occurred_at, record) of each change applied from a payload."""
    out: dict[str, list[tuple[str | None, datetime, dict | None]]] = {}
    for chunk in chunks(list(dict.fromkeys(entity_ids))):
        rows = s.execute(
            select(
                WebhookEventRow.entity_id,
                WebhookEventRow.version,
                WebhookEventRow.occurred_at,
                WebhookEventRow.record,
            ).where(
                WebhookEventRow.connection_id == connection_id,
                WebhookEventRow.stream == stream,
                WebhookEventRow.entity_id.in_(chunk),
                WebhookEventRow.state == "applied",
            )
        )
        for entity, version, occurred, record in rows:
            out.setdefault(entity, []).append((version, occurred, record))
    return out


def restore_read_times(s: Session, read_at: dict[int, datetime | None]) -> None:
    """Put links' ``last_synced_at`` back: it says when the provider was last *read* for the
    record (a pull, a sweep, a fetch), which a pushed change is not."""
    for link_id, when in read_at.items():
        s.execute(update(Link).where(Link.id == link_id).values(last_synced_at=when))


def oldest_hint(s: Session, connection_id: int) -> datetime | None:
    """When the connection's oldest open hint came (None: none is open)."""
    return s.scalar(
        select(func.min(WebhookEventRow.received_at)).where(
            WebhookEventRow.connection_id == connection_id, WebhookEventRow.state == "hint"
        )
    )


def any_unfollowed(s: Session, connection_id: int, followed: Sequence[str]) -> bool:
    """Whether an event of a stream no job applies is open (a read, before taking the lock)."""
    found = s.scalar(
        select(WebhookEventRow.id)
        .where(
            WebhookEventRow.connection_id == connection_id,
            WebhookEventRow.stream.not_in(list(followed)),
            WebhookEventRow.state.in_(("pending", "hint")),
        )
        .limit(1)
    )
    return found is not None


def close_unfollowed(s: Session, connection_id: int, followed: Sequence[str], now: datetime) -> int:
    """Close the open events of streams no job applies (Xero's invoices, X-Series' sales), so
    they do not wait for ever in ``webhooks status``."""
    result = s.execute(
        update(WebhookEventRow)
        .where(
            WebhookEventRow.connection_id == connection_id,
            WebhookEventRow.stream.not_in(list(followed)),
            WebhookEventRow.state.in_(("pending", "hint")),
        )
        .values(state="done", applied_at=now)
        .returning(WebhookEventRow.id)
    )
    return len(result.all())
