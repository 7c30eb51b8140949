"""Lines without a product code (shipping, surcharges, discounts, gift cards) are posted as each
provider allows and never become a product (issue 22, line 2).

- ``invoices add`` reads ``"kind": "shipping"`` (and the other kinds) without a ``sku``; a sku on
  such a line, or an unknown kind, is refused naming the field.
- A provider that cannot take such a line refuses the order at ``invoices add``, in one line; one
  that takes it only against a service item refuses it until the connection names one.
- Posted to each simulator: the invoice carries the line (Xero: no ItemCode, to the
  ``charge_account_code`` account; Unleashed and Lightspeed: against ``charge_item``), the
  provider's total is the order's, and no product was created or even looked up for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import InvoiceJob, OrderLine, Product
from synccli.sync.orders import OrderInputError, parse_orders, unsupported

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}


def order(provider: str, sku: str) -> dict[str, Any]:
    return {
        "number": "WEB-7",
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "jane@example.com", "name": "Jane Smith"},
        "lines": [
            {
                "sku": sku,
                "description": "Mug",
                "quantity": 2,
                "unit_price": "10.00",
                "tax_code": TAX[provider],
                "tax_rate": "0.15",
            },
            {
                "kind": "shipping",
                "description": "Courier",
                "quantity": 1,
                "unit_price": "8.00",
                "tax_code": TAX[provider],
                "tax_rate": "0.15",
            },
            {"kind": "discount", "description": "Voucher", "quantity": 1, "unit_price": "-2.00"},
        ],
        "total": "30.20",  # 20 + 3 + 8 + 1.20 - 2
    }


def test_a_line_kind_and_its_sku_are_checked() -> None:
    [parsed] = parse_orders(json.dumps(order("xero", "MUG")))
    assert [(ln.kind, ln.sku) for ln in parsed.lines] == [
        ("product", "MUG"),
        ("shipping", ""),
        ("discount", ""),
    ]
    bad = order("xero", "MUG")
    bad["lines"][1]["sku"] = "SHIPPING"
    bad["lines"][2]["kind"] = "freight"
    with pytest.raises(OrderInputError) as err:
        parse_orders(json.dumps(bad))
    assert err.value.problems == [
        "line 1: lines[1].sku must be left out of a shipping line (it has no product)",
        "line 1: lines[2].kind must be one of product, shipping, surcharge, discount, "
        "gift_card, other, not 'freight'",
    ]


@pytest.mark.parametrize("provider", registry.names())
def test_add_refuses_what_the_provider_or_connection_cannot_take(provider: str) -> None:
    parsed = parse_orders(json.dumps(order(provider, "MUG")))
    documents = registry.get(provider).capabilities.documents
    refused = unsupported(provider, parsed, {})
    if documents.codeless_lines == "none":
        assert refused == [
            f"line 1: {provider} cannot take lines without a product code (sku) "
            "(README: the provider table)"
        ]
    elif documents.codeless_lines == "charge_item":
        assert refused == [
            f"line 1: {provider} takes lines without a product code only against a service "
            "item: set the connection's charge_item first (synccli connections set NAME "
            "charge_item=...)"
        ]
        assert unsupported(provider, parsed, {"charge_item": "1"}) == []
    else:
        assert refused == []


@pytest.mark.parametrize(
    "provider",
    [
        p
        for p in registry.names()
        if registry.get(p).capabilities.documents.codeless_lines == "charge_item"
    ],
)
def test_the_charge_item_refusal_names_the_connection_in_its_command(provider: str) -> None:
    """The command the refusal quotes works as printed: it names the connection."""
    parsed = parse_orders(json.dumps(order(provider, "MUG")))
    refused = unsupported(provider, parsed, {}, connection="shop1")
    assert refused and refused[0].endswith("(synccli connections set shop1 charge_item=...)")


@contextmanager
def sandbox(provider: str) -> Iterator[harness.Running]:
    running = harness.start(provider, products=5, customers=3, time_scale=SCALE)
    try:
        yield running
    finally:
        running.stop()


def charge_item(provider: str, running: harness.Running) -> dict[str, str]:
    """The connection setting naming the merchant's service item (an existing one)."""
    if provider == "unleashed":
        return {"charge_item": next(iter(running.app.world().products.values())).code}
    if provider == "lightspeed":
        return {"charge_item": str(next(p for p, _ in running.app.items()).seq)}
    if provider == "lightspeed-x":
        return {"charge_item": next(iter(running.app.world().products.values())).id}
    return {"charge_account_code": "260"}


def codeless_lines_sent(provider: str, invoice: Any, settings: dict[str, str]) -> list[Any]:
    body = invoice.body
    if provider == "xero":
        return [(ln.get("ItemCode"), ln["AccountCode"]) for ln in body["LineItems"][1:]]
    if provider == "unleashed":
        return [ln["code"] for ln in body["lines"][1:]]
    if provider == "lightspeed-x":
        return [ln["product"]["id"] for ln in body["line_items"][1:]]
    return [ln["itemID"] for ln in body["SaleLines"]["SaleLine"][1:]]


def expected_lines(provider: str, settings: dict[str, str]) -> list[Any]:
    if provider == "xero":
        return [(None, "260"), (None, "260")]
    return [settings["charge_item"]] * 2


@pytest.mark.parametrize(
    "provider",
    [
        p
        for p in registry.suite_names()
        if registry.get(p).capabilities.documents.codeless_lines != "none"
    ],
)
def test_codeless_lines_are_posted_and_never_become_products(
    store: Store, cli: Any, tmp_path: Path, provider: str
) -> None:
    with sandbox(provider) as running:
        settings = charge_item(provider, running)
        harness.add_connection(store, "shop", running, time_scale=SCALE, **settings)
        world = running.app.catalogue.tenant(running.app.tenant)
        known = next(iter(world.products.values()))
        products_before = len(world.products)
        path = tmp_path / "order.json"
        path.write_text(json.dumps(order(provider, known.code)), encoding="utf-8")
        result = cli("invoices", "add", str(path), "-c", "shop")
        assert result.exit_code == 0, result.stderr
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        [invoice] = list(world.invoices.values())
        assert Decimal(invoice.total) == Decimal("30.20")
        assert codeless_lines_sent(provider, invoice, settings) == expected_lines(
            provider, settings
        )
        assert len(world.products) == products_before  # nothing created at the provider
        with store.session() as s:
            job = s.scalar(select(InvoiceJob))
            assert job is not None and job.state == "posted", job and job.last_error
            # nothing linked nor created locally for the codeless lines either
            assert s.scalar(select(func.count()).select_from(Product)) == 1
            kinds = s.scalars(select(OrderLine.kind).order_by(OrderLine.line_no)).all()
            assert kinds == [None, "shipping", "discount"]


@pytest.mark.parametrize(
    "provider",
    [
        p
        for p in registry.suite_names()
        if registry.get(p).capabilities.documents.tax_inclusive != "none"
    ],
)
def test_an_inclusive_order_is_posted_with_its_own_total(
    store: Store, cli: Any, tmp_path: Path, provider: str
) -> None:
    """End to end through the CLI: prices include 15% tax, and one line (0.04) is a total no
    exclusive price reaches, so a provider that takes exclusive prices only gets a rounding line
    against charge_item; every provider's total is the order's."""
    with sandbox(provider) as running:
        settings = charge_item(provider, running)
        harness.add_connection(store, "shop", running, time_scale=SCALE, **settings)
        world = running.app.catalogue.tenant(running.app.tenant)
        known = next(iter(world.products.values()))
        body = order(provider, known.code)
        body["prices_include_tax"] = True
        body["lines"][1]["unit_price"] = "0.04"
        body["total"] = str(Decimal("20.00") + Decimal("0.04") - Decimal("2.00"))
        path = tmp_path / "order.json"
        path.write_text(json.dumps(body), encoding="utf-8")
        result = cli("invoices", "add", str(path), "-c", "shop")
        assert result.exit_code == 0, result.stderr
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        [invoice] = list(world.invoices.values())
        assert Decimal(invoice.total) == Decimal("18.04")
        with store.session() as s:
            job = s.scalar(select(InvoiceJob))
            assert job is not None and job.state == "posted", job and job.last_error


def test_rows_the_shop_wrote_are_checked_before_any_call() -> None:
    """An order written straight into the tables: an unknown kind is never guessed to be a line
    without a product (it would go against the service item), payments over the total are not
    sent."""
    from datetime import UTC, datetime

    from synccli.store.models import Order, OrderPayment
    from synccli.sync.invoices import _local_problems

    when = datetime(2026, 5, 1, tzinfo=UTC)
    order = Order(number="T-1", total=Decimal("10.00"), date=when, currency="NZD")
    order.lines = [
        OrderLine(
            line_no=1,
            sku="",
            description="Freight",
            quantity=Decimal(1),
            unit_price=Decimal("10.00"),
            tax_rate=Decimal(0),
            kind="freight",
        ),
    ]
    order.payments = [OrderPayment(payment_no=1, amount=Decimal("11.00"), date=when, method="card")]
    problems = _local_problems(order, "lightspeed", {"charge_item": "1"})
    assert (
        "line 1: kind 'freight' is not one of ('product', 'shipping', 'surcharge', "
        "'discount', 'gift_card', 'other')" in problems
    )
    assert any("payments add up to 11.00, more than the order's total 10.00" in p for p in problems)
