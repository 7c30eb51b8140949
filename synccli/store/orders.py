"""The reads ``invoices add`` makes before it writes a batch of orders."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from synccli.store.bulk import chunks
from synccli.store.models import Customer, Order, OrderLine


def existing_numbers(s: Session, connection_id: int, numbers: list[str]) -> set[str]:
    """Which of ``numbers`` the connection has orders under already."""
    found: set[str] = set()
    for chunk in chunks(numbers):
        found.update(
            s.scalars(
                select(Order.number).where(
                    Order.connection_id == connection_id, Order.number.in_(chunk)
                )
            )
        )
    return found


def customer_by_email(s: Session, connection_id: int, email: str) -> Customer | None:
    """The oldest of the shop's customers with this (normalised) email."""
    return s.scalar(
        select(Customer)
        .where(
            Customer.connection_id == connection_id,
            # the shop's rows may carry stray case and spaces (link-customers ignores both)
            func.lower(func.trim(Customer.email)) == email,
        )
        .order_by(Customer.id)
        .limit(1)
    )


def customer_by_account(s: Session, connection_id: int, account: str) -> Customer | None:
    """The oldest of the shop's customers with this account number."""
    return s.scalar(
        select(Customer)
        .where(Customer.connection_id == connection_id, Customer.account_number == account)
        .order_by(Customer.id)
        .limit(1)
    )


def refunded_lines(
    s: Session, connection_id: int, number: str
) -> list[tuple[int, str | None, Decimal, Decimal]]:
    """(refunded line number, kind, quantity, unit price) of every line of every refund of the
    connection's order ``number``."""
    rows = s.execute(
        select(OrderLine.refund_line, OrderLine.kind, OrderLine.quantity, OrderLine.unit_price)
        .join(Order, OrderLine.order_id == Order.id)
        .where(
            Order.connection_id == connection_id,
            Order.refund_of == number,
            OrderLine.refund_line.is_not(None),
        )
    )
    return [(int(no), kind, q, p) for no, kind, q, p in rows.tuples() if no is not None]
