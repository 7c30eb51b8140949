"""Local customers, the remote customers link-customers has seen, and the customer review items:
the reads the customer jobs make, as named functions over an open session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from synccli.store.bulk import chunks
from synccli.store.models import Customer, Link, ReviewItem
from synccli.store.models import RemoteCustomer as SeenCustomer

# PostgreSQL advisory lock key (+ connection id): find-or-create a local customer
_LOCK_NEW_LOCAL = 0x43_55_53_01


def seen_customers(s: Session, connection_id: int) -> list[SeenCustomer]:
    """Every remote customer link-customers has seen for the connection."""
    return list(s.scalars(select(SeenCustomer).where(SeenCustomer.connection_id == connection_id)))


def seen_customer(s: Session, connection_id: int, remote_id: str) -> SeenCustomer | None:
    return s.scalar(
        select(SeenCustomer).where(
            SeenCustomer.connection_id == connection_id, SeenCustomer.remote_id == remote_id
        )
    )


def seen_by_id(
    s: Session, connection_id: int, remote_ids: Sequence[str]
) -> dict[str, SeenCustomer]:
    """The seen-customer rows of these remote ids, by remote id."""
    found: dict[str, SeenCustomer] = {}
    for ids in chunks(remote_ids):
        for row in s.scalars(
            select(SeenCustomer).where(
                SeenCustomer.connection_id == connection_id, SeenCustomer.remote_id.in_(ids)
            )
        ):
            found[row.remote_id] = row
    return found


def unlinked_customers(
    s: Session, connection_id: int, kind: str
) -> list[tuple[int, str, str | None, str | None]]:
    """(id, name, email, account number) of the local customers no link of ``kind`` binds."""
    linked = select(Link.local_id).where(Link.connection_id == connection_id, Link.kind == kind)
    rows = s.execute(
        select(Customer.id, Customer.name, Customer.email, Customer.account_number).where(
            Customer.connection_id == connection_id, Customer.id.not_in(linked)
        )
    )
    return [(i, n, e, a) for i, n, e, a in rows]


def customers_by_email(s: Session, connection_id: int, email: str) -> list[Customer]:
    """Local customers whose email is ``email`` (given lower-case and stripped), oldest first."""
    return _customers(
        s,
        connection_id,
        or_(Customer.email == email, func.lower(func.trim(Customer.email)) == email),
    )


def customers_by_account(s: Session, connection_id: int, account: str) -> list[Customer]:
    """Local customers whose account number is ``account`` (given case-folded and stripped)."""
    return _customers(s, connection_id, func.lower(func.trim(Customer.account_number)) == account)


def customers_by_bare_name(s: Session, connection_id: int, name: str) -> list[Customer]:
    """Local customers of exactly this name with neither email nor account number."""
    return _customers(
        s,
        connection_id,
        (Customer.name == name) & Customer.email.is_(None) & Customer.account_number.is_(None),
    )


def customers_by_email_or_account(
    s: Session, connection_id: int, email: str | None, account: str | None
) -> list[Customer]:
    """Local customers with this email or this account number (both given normalised)."""
    return list(
        s.scalars(
            select(Customer).where(
                Customer.connection_id == connection_id,
                or_(
                    func.lower(func.trim(Customer.email)) == email,
                    func.lower(func.trim(Customer.account_number)) == account,
                ),
            )
        )
    )


def _customers(s: Session, connection_id: int, cond: Any) -> list[Customer]:
    return list(
        s.scalars(
            select(Customer)
            .where(Customer.connection_id == connection_id, cond)
            .order_by(Customer.id)
        )
    )


def serialise_new_customers(s: Session, connection_id: int) -> None:
    """Within ``Store.locked()``: no other process creates a local customer of this connection
    until the transaction ends (SQLite's write lock does it already; PostgreSQL takes an advisory
    lock)."""
    if s.get_bind().dialect.name != "sqlite":
        s.execute(select(func.pg_advisory_xact_lock(_LOCK_NEW_LOCAL, connection_id)))


def customers_with_links(
    s: Session, connection_id: int, kind: str, unlinked_only: bool = False
) -> list[tuple[Customer, Link | None]]:
    """Every local customer with its link (None when unlinked), by id."""
    q = (
        select(Customer, Link)
        .outerjoin(
            Link,
            (Link.local_id == Customer.id)
            & (Link.kind == kind)
            & (Link.connection_id == Customer.connection_id),
        )
        .where(Customer.connection_id == connection_id)
        .order_by(Customer.id)
    )
    if unlinked_only:
        q = q.where(Link.id.is_(None))
    return [(cust, link) for cust, link in s.execute(q)]


def open_review_items(
    s: Session,
    connection_id: int,
    kinds: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
) -> list[ReviewItem]:
    """The connection's unresolved review items (of these kinds, about these subjects), oldest
    first."""
    q = select(ReviewItem).where(
        ReviewItem.connection_id == connection_id, ReviewItem.resolved_at.is_(None)
    )
    if kinds is not None:
        q = q.where(ReviewItem.kind.in_(list(kinds)))
    if subjects is not None:
        q = q.where(ReviewItem.subject.in_(list(subjects)))
    return list(s.scalars(q.order_by(ReviewItem.created_at, ReviewItem.id)))


def review_items_by_id(
    s: Session, connection_id: int, ids: Sequence[int], kinds: Iterable[str]
) -> list[ReviewItem]:
    """These review items of the connection, of these kinds (resolved or not)."""
    return list(
        s.scalars(
            select(ReviewItem).where(
                ReviewItem.connection_id == connection_id,
                ReviewItem.id.in_(ids),
                ReviewItem.kind.in_(list(kinds)),
            )
        )
    )
