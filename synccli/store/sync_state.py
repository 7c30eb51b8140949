"""Links, cursors, change events and review items: the functions jobs use to read and write them.

All functions take an open session; the caller decides where a transaction ends (a job commits
page by page).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from synccli.errors import Rejected
from synccli.remote_ids import is_nil
from synccli.store.bulk import chunks, one_of
from synccli.store.models import Cursor, Event, Link, ReviewItem


def link_by_remote(
    s: Session, connection_id: int, kind: str, remote_id: str, *, lock: bool = False
) -> Link | None:
    """The link of this remote record. ``lock``: its row locked for this transaction (on
    PostgreSQL; SQLite's write transaction holds the whole store), so a check of what it holds
    and the write that follows see the same row: another writer of it commits first, and this
    read waits for it and then finds what it wrote."""
    q = select(Link).where(
        Link.connection_id == connection_id, Link.kind == kind, Link.remote_id == remote_id
    )
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    return s.scalar(q)


def link_by_local(s: Session, connection_id: int, kind: str, local_id: int) -> Link | None:
    return s.scalar(
        select(Link).where(
            Link.connection_id == connection_id, Link.kind == kind, Link.local_id == local_id
        )
    )


def links_by_remote(s: Session, connection_id: int, kind: str) -> dict[str, Link]:
    """Every link of a kind, keyed by remote id (one query for a whole page or catalogue)."""
    rows = s.scalars(select(Link).where(Link.connection_id == connection_id, Link.kind == kind))
    return {link.remote_id: link for link in rows}


def links_for(s: Session, connection_id: int, kind: str, remote_ids: list[str]) -> dict[str, Link]:
    """The links of these remote ids (one page's worth), keyed by remote id."""
    found: dict[str, Link] = {}
    dialect = s.get_bind().dialect
    for chunk in chunks(remote_ids):
        rows = s.scalars(
            select(Link).where(
                Link.connection_id == connection_id,
                Link.kind == kind,
                one_of(Link.remote_id, chunk, dialect),
            )
        )
        found.update((link.remote_id, link) for link in rows)
    return found


def add_link(
    s: Session,
    connection_id: int,
    kind: str,
    local_id: int,
    remote_id: str,
    now: datetime,
    *,
    remote_code: str | None = None,
    origin: str = "matched",
    remote_updated_at: datetime | None = None,
) -> Link:
    """Bind a local record to a remote one. The database's unique keys refuse a second binding
    of either side (IntegrityError), so two racing jobs cannot both link. A remote id that names
    no record (the nil GUID, empty) is refused: the callers check first, this is the last guard."""
    if is_nil(remote_id):
        raise Rejected(f"{kind} link refused: the remote id {remote_id!s:.60} names no record")
    link = Link(
        connection_id=connection_id,
        kind=kind,
        local_id=local_id,
        remote_id=remote_id,
        remote_code=remote_code,
        origin=origin,
        state="linked",
        last_synced_at=now,
        remote_updated_at=remote_updated_at,
        created_at=now,
    )
    s.add(link)
    s.flush()
    return link


def linked_local_ids(
    s: Session, connection_id: int, kind: str, local_ids: Sequence[int]
) -> set[int]:
    """Which of these local ids a link of ``kind`` binds."""
    found: set[int] = set()
    dialect = s.get_bind().dialect
    for chunk in chunks(local_ids):
        found.update(
            s.scalars(
                select(Link.local_id).where(
                    Link.connection_id == connection_id,
                    Link.kind == kind,
                    one_of(Link.local_id, chunk, dialect),
                )
            )
        )
    return found


def delete_link(s: Session, link_id: int) -> None:
    s.execute(delete(Link).where(Link.id == link_id))


def oldest_links(s: Session, connection_id: int, kind: str, limit: int) -> list[Link]:
    """The links synced longest ago (never-synced first): the sweep's rotation."""
    return list(
        s.scalars(
            select(Link)
            .where(Link.connection_id == connection_id, Link.kind == kind)
            .order_by(Link.last_synced_at.is_not(None), Link.last_synced_at, Link.id)
            .limit(limit)
        )
    )


def get_cursor(s: Session, connection_id: int, stream: str) -> Cursor | None:
    return s.get(Cursor, (connection_id, stream))


def advance_cursor(
    s: Session,
    connection_id: int,
    stream: str,
    value: datetime | None,
    now: datetime,
    page: int | None = None,
) -> None:
    """Move a cursor forward (never back), in the caller's transaction, so it commits together
    with the page it describes."""
    cursor = s.get(Cursor, (connection_id, stream))
    if cursor is None:
        s.add(
            Cursor(
                connection_id=connection_id, stream=stream, value=value, page=page, updated_at=now
            )
        )
        return
    if value is not None and (cursor.value is None or value > cursor.value):
        cursor.value = value
    cursor.page = page
    cursor.updated_at = now


def record_event(
    s: Session,
    *,
    run_id: int | None,
    connection_id: int | None,
    kind: str,
    local_id: int,
    field: str,
    old: Any,
    new: Any,
    at: datetime,
) -> None:
    s.add(
        Event(
            run_id=run_id,
            connection_id=connection_id,
            kind=kind,
            local_id=local_id,
            field=field,
            old=None if old is None else str(old),
            new=None if new is None else str(new),
            at=at,
        )
    )


def add_review(
    s: Session,
    connection_id: int,
    kind: str,
    subject: str,
    detail: dict[str, Any],
    now: datetime,
) -> ReviewItem:
    """A review item for the merchant; the same (kind, subject) is recorded once."""
    item = s.scalar(
        select(ReviewItem).where(
            ReviewItem.connection_id == connection_id,
            ReviewItem.kind == kind,
            ReviewItem.subject == subject,
        )
    )
    if item is None:
        item = ReviewItem(
            connection_id=connection_id, kind=kind, subject=subject, detail=detail, created_at=now
        )
        s.add(item)
    else:
        item.detail = detail
    return item


# --- posted invoices, remembered apart from the shop's order rows ------------------------------
INVOICE = "invoice"  # links of this kind: local id = the order's id, remote code = its number


def remember_invoice(
    s: Session, connection_id: int, order_id: int, number: str, remote_id: str, now: datetime
) -> None:
    """Keep that order ``number`` is at the provider as ``remote_id``. The invoice job (and its
    attempts) go when the shop deletes the order row; this link stays, so an order inserted
    again under the same number is looked up before it is posted (:func:`posted_before`)."""
    if is_nil(remote_id):
        return
    link = link_by_remote(s, connection_id, INVOICE, remote_id)
    other = link_by_local(s, connection_id, INVOICE, order_id)
    if other is not None and other is not link:
        s.delete(other)  # the order was found again under another remote id: keep the newest
        s.flush()
    if link is None:
        add_link(
            s, connection_id, INVOICE, order_id, remote_id, now, remote_code=number, origin="posted"
        )
        return
    link.local_id, link.remote_code, link.last_synced_at = order_id, number, now


def posted_before(s: Session, connection_id: int, numbers: list[str]) -> set[str]:
    """Which of these order numbers this connection posted before (see remember_invoice)."""
    found: set[str] = set()
    dialect = s.get_bind().dialect
    for chunk in chunks(numbers):
        found.update(
            str(code)
            for code in s.scalars(
                select(Link.remote_code).where(
                    Link.connection_id == connection_id,
                    Link.kind == INVOICE,
                    one_of(Link.remote_code, chunk, dialect),
                )
            )
        )
    return found


# --- products the provider has without a code ----------------------------------------------------
UNCODED = "uncoded_product"  # review kind: a remote product with no code in the SKU field


def _uncoded_subject(remote_id: str) -> str:
    return f"remote:{remote_id}"


def mark_uncoded(
    s: Session, connection_id: int, products: list[tuple[str, str]], now: datetime
) -> int:
    """Remember remote products (remote id, name) that carry no code: one open review item
    each, so ``status`` can count them and a later run does not report them again. Returns
    how many were not known yet."""
    if not products:
        return 0
    subjects = {_uncoded_subject(rid): name for rid, name in products}
    known = {
        item.subject: item
        for item in s.scalars(
            select(ReviewItem).where(
                ReviewItem.connection_id == connection_id,
                ReviewItem.kind == UNCODED,
                one_of(ReviewItem.subject, list(subjects), s.get_bind().dialect),
            )
        )
    }
    new = 0
    for subject, name in subjects.items():
        item = known.get(subject)
        if item is None:
            s.add(
                ReviewItem(
                    connection_id=connection_id,
                    kind=UNCODED,
                    subject=subject,
                    detail={"remote_id": subject.removeprefix("remote:"), "name": name},
                    created_at=now,
                )
            )
            new += 1
        elif item.resolved_at is not None:  # it lost its code again
            item.resolved_at = None
            item.detail = {**item.detail, "name": name}
    return new


def resolve_uncoded(s: Session, connection_id: int, remote_ids: list[str], now: datetime) -> int:
    """Close the uncoded items among ``remote_ids`` (they carry a code now)."""
    if not remote_ids:
        return 0
    open_items = s.scalars(
        select(ReviewItem).where(
            ReviewItem.connection_id == connection_id,
            ReviewItem.kind == UNCODED,
            ReviewItem.resolved_at.is_(None),
            one_of(
                ReviewItem.subject,
                [_uncoded_subject(r) for r in remote_ids],
                s.get_bind().dialect,
            ),
        )
    ).all()
    for item in open_items:
        item.resolved_at = now
    return len(open_items)


def any_uncoded(s: Session, connection_id: int) -> bool:
    return (
        s.scalar(
            select(ReviewItem.id)
            .where(
                ReviewItem.connection_id == connection_id,
                ReviewItem.kind == UNCODED,
                ReviewItem.resolved_at.is_(None),
            )
            .limit(1)
        )
        is not None
    )


def count_uncoded(s: Session, connection_id: int) -> int:
    """Remote products known to carry no code (open uncoded items)."""
    return (
        s.scalar(
            select(func.count())
            .select_from(ReviewItem)
            .where(
                ReviewItem.connection_id == connection_id,
                ReviewItem.kind == UNCODED,
                ReviewItem.resolved_at.is_(None),
            )
        )
        or 0
    )
