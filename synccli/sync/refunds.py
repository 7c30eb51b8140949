"""Refunds in: a refund names the order it gives money back on, and which of its lines.

A refund is one JSON object among the orders ``invoices add`` reads (docs/orders.md)::

    {"number": "WEB-1042-R1", "date": "2026-05-03", "refund_of": "WEB-1042",
     "lines": [{"line": 1, "quantity": 1}, {"line": 3, "amount": "5.00"}]}

``lines[i].line`` is the refunded order's line number (1, 2, ...); ``quantity`` gives back that
many of it at the order's unit price, ``amount`` a sum of money on it (tax-exclusive, or
tax-inclusive when the order's prices include tax, as its ``unit_price``). Without ``lines`` the
whole order is refunded. ``total`` is optional and checked against the lines when given.

The refund takes the order's currency, customer and tax mode, and is stored as an order with
``refund_of`` set: each line a copy of the refunded line (a quantity given back), or a line
without a product code "Refund: ..." of quantity 1 at the amount (money given back, no goods:
no stock moves). Never more than was sold is given back, over every refund of the order: per
line, the quantity, and the money (round2(quantity x unit_price) of the line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from synccli.connectors.wire import round_money
from synccli.store.invoices import order_job
from synccli.store.orders import refunded_lines
from synccli.store.reports import order_by_number

REFUND_FIELDS = ("number", "date", "refund_of", "lines", "total")
REFUND_LINE_FIELDS = ("line", "quantity", "amount")


@dataclass
class RefundLineIn:
    line: int  # the refunded order's line number
    quantity: Decimal | None = None  # given back at the order's unit price
    amount: Decimal | None = None  # money given back on the line (no goods)


@dataclass
class RefundIn:
    of: str  # the refunded order's number
    lines: list[RefundLineIn] | None  # None: the whole order
    total: Decimal | None = None


def read(v: Any, value: dict[str, Any]) -> RefundIn | None:
    """Read a refund's own fields with the order validator ``v`` (its checks and messages)."""
    v.unknown(value, REFUND_FIELDS, "", "a refund")
    of = v.string(value, "refund_of", "refund_of", required=True, max_len=100)
    total = v.number(value, "total", "total", required=False, places=2, minimum=Decimal(0))
    raw = value.get("lines")
    if raw is None:
        return RefundIn(of, None, total) if of else None
    if not isinstance(raw, list) or not raw:
        v.fail("lines", "must be an array of at least one line (leave it out: the whole order)")
        return None
    lines = []
    for i, item in enumerate(raw):
        p = f"lines[{i}]"
        if not isinstance(item, dict):
            v.fail(p, "must be an object")
            continue
        v.unknown(item, REFUND_LINE_FIELDS, f"{p}.", "a refund line")
        line = v.number(item, "line", f"{p}.line", required=True, minimum=Decimal(1), places=0)
        quantity = v.number(item, "quantity", f"{p}.quantity", required=False, minimum=Decimal(0))
        amount = v.number(item, "amount", f"{p}.amount", required=False, places=2)
        if "quantity" not in item and "amount" not in item:
            v.fail(p, "needs quantity or amount")
        elif "quantity" in item and "amount" in item:
            v.fail(p, "takes quantity or amount, not both")
        elif amount is not None and amount <= 0:
            v.fail(f"{p}.amount", "must be more than 0")
        elif line is not None and (quantity is not None or amount is not None):
            lines.append(RefundLineIn(int(line), quantity, amount))
    return RefundIn(of, lines, total) if of else None


@dataclass
class _Sold:
    """One line of the refunded order, and what earlier refunds gave back on it."""

    line_no: int
    kind: str
    sku: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_code: str | None
    tax_rate: Decimal
    account_code: str | None
    quantity_back: Decimal = Decimal(0)
    money_back: Decimal = Decimal("0.00")

    @property
    def money(self) -> Decimal:
        return round_money(self.quantity * self.unit_price)


@dataclass
class Original:
    """The refunded order as a refund needs it (from the store or from the same batch)."""

    number: str
    currency: str
    customer: Any  # CustomerIn
    customer_id: int | None
    inclusive: bool
    lines: list[_Sold]
    refunded: bool  # some refund of it exists already


def original_in_store(s: Session, connection_id: int, number: str) -> Original | None:
    from synccli.sync.orders import CustomerIn

    order = order_by_number(s, connection_id, number)
    if order is None:
        return None
    if order.refund_of:
        return None  # a refund is not refunded in turn
    sold = [
        _Sold(
            ln.line_no,
            ln.kind or "product",
            ln.sku,
            ln.description,
            Decimal(ln.quantity),
            Decimal(ln.unit_price),
            ln.tax_code,
            Decimal(ln.tax_rate or 0),
            ln.account_code,
        )
        for ln in order.lines
    ]
    back = refunded_lines(s, connection_id, number)
    by_no = {x.line_no: x for x in sold}
    for line_no, kind, quantity, price in back:
        x = by_no.get(line_no)
        if x is None:
            continue
        x.money_back += round_money(Decimal(quantity) * Decimal(price))
        if (kind or "product") == x.kind:  # a quantity given back (an amount: kind "other")
            x.quantity_back += Decimal(quantity)
    customer = CustomerIn(
        order.customer_name or order.customer_email or order.customer_account or "",
        order.customer_email,
        order.customer_account,
    )
    return Original(
        number,
        order.currency,
        customer,
        order.customer_id,
        bool(order.prices_include_tax),
        sold,
        bool(back),
    )


def original_in_batch(o: Any) -> Original:
    """An order of the same batch (an OrderIn) as a refund's original."""
    sold = [
        _Sold(
            i + 1,
            ln.kind,
            ln.sku,
            ln.description,
            ln.quantity,
            ln.unit_price,
            ln.tax_code,
            ln.tax_rate,
            ln.account_code,
        )
        for i, ln in enumerate(o.lines)
    ]
    return Original(o.number, o.currency, o.customer, None, o.prices_include_tax, sold, False)


def resolve(
    refund: RefundIn, original: Original, fail: Callable[[str, str], None]
) -> list[Any] | None:
    """The refund's lines (``LineIn``), each checked against what is left to give back on the
    original's line (and counted as given back, for the next refund of the same batch); None
    when a problem was reported through ``fail(path, problem)``."""
    from synccli.sync.orders import LineIn

    by_no = {x.line_no: x for x in original.lines}
    asked = refund.lines
    if asked is None:
        if original.refunded:
            fail(
                "refund_of",
                f"{original.number!r} has been refunded in part already: name the lines to "
                "refund (lines)",
            )
            return None
        asked = [RefundLineIn(x.line_no, quantity=x.quantity) for x in original.lines]
    out, ok = [], True
    for i, r in enumerate(asked):
        sold = by_no.get(r.line)
        if sold is None:
            fail(f"lines[{i}].line", f"{r.line}: {original.number} has no such line")
            ok = False
            continue
        if r.quantity is not None:
            left = sold.quantity - sold.quantity_back
            if r.quantity > left:
                fail(
                    f"lines[{i}].quantity",
                    f"{_n(r.quantity)} of line {r.line} of {original.number} is more than is "
                    f"left to refund ({_n(left)}: {_n(sold.quantity)} sold, "
                    f"{_n(sold.quantity_back)} refunded before)",
                )
                ok = False
                continue
            money = round_money(r.quantity * sold.unit_price)
            sold.quantity_back += r.quantity
            sold.money_back += money
            out.append(
                LineIn(
                    sold.sku,
                    sold.description,
                    r.quantity,
                    sold.unit_price,
                    sold.tax_code,
                    sold.tax_rate,
                    sold.account_code,
                    sold.kind,
                    refund_line=sold.line_no,
                )
            )
            continue
        assert r.amount is not None
        left = sold.money - sold.money_back
        if r.amount > left:
            fail(
                f"lines[{i}].amount",
                f"{r.amount} of line {r.line} of {original.number} is more than is left to "
                f"refund ({left}: {sold.money} sold, {sold.money_back} refunded before)",
            )
            ok = False
            continue
        sold.money_back += r.amount
        out.append(
            LineIn(
                "",
                f"Refund: {sold.description}"[:4000],
                Decimal(1),
                r.amount,
                sold.tax_code,
                sold.tax_rate,
                sold.account_code,
                "other",
                refund_line=sold.line_no,
            )
        )
    original.refunded = True
    return out if ok else None


def waiting_for(of: str, state: str | None) -> str:
    """Why a refund waits: its order ``of`` is not posted (its job's ``state``; None: the order
    has no invoice job)."""
    if state is None:
        return f"waiting for order {of}: it is not in the store (or has no invoice job yet)"
    return f"waiting for order {of} to be posted (it is {state})"


def first_state(s: Session, connection_id: int, refund_of: str | None) -> tuple[str, str | None]:
    """(state, why) of a new invoice job: a refund whose order is not posted is ``waiting`` from
    the start, so `invoices list`, `invoices show` and `status` say so before any run."""
    if refund_of is None:
        return "pending", None
    original = order_job(s, connection_id, refund_of)
    if original is not None and original[0] == "posted":
        return "pending", None
    return "waiting", waiting_for(refund_of, original[0] if original else None)


def _n(value: Decimal) -> str:
    """A quantity as people write it (2, not 2.0000)."""
    text = format(value.normalize(), "f")
    return text
