"""An order may carry the payments the customer made (issue 22, line 3, as far as it goes).

- ``invoices add`` reads ``payments`` (amount, date, method, reference) and refuses payments
  that add up to more than the order's total, naming the field.
- Xero applies them to the posted invoice (tests/test_xero_payments.py) into the connection's
  ``payment_account_code``, which an order with payments needs.
- A provider whose sale carries the payments (Lightspeed, both series) rings the sale up with
  them, each with the payment type the connection maps its method to (``payment_types``); they
  must add up to the order's total there (a completed sale must balance). A provider that takes
  no payments yet refuses such an order at ``invoices add`` in one line.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import InvoiceJob, OrderPayment
from synccli.sync.orders import OrderInputError, parse_orders, unsupported

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}


def order(provider: str, sku: str, payments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "number": "WEB-9",
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
        ],
        "total": "23.00",
        "payments": payments,
    }


PAID = [
    {"amount": "20.00", "date": "2026-05-01", "method": "card", "reference": "ch_1"},
    {"amount": "3.00", "date": "2026-05-01", "method": "gift_card"},
]


def test_payments_are_read_and_checked() -> None:
    [parsed] = parse_orders(json.dumps(order("xero", "MUG", PAID)))
    assert [(p.amount, p.method, p.reference) for p in parsed.payments] == [
        (Decimal("20.00"), "card", "ch_1"),
        (Decimal("3.00"), "gift_card", None),
    ]
    over = order("xero", "MUG", [*PAID, {"amount": "0.01", "date": "2026-05-01", "method": "x"}])
    with pytest.raises(OrderInputError, match="payments add up to 23.01, more than the order's"):
        parse_orders(json.dumps(over))
    bad = order("xero", "MUG", [{"amount": "0", "date": "nope", "way": "card"}])
    with pytest.raises(OrderInputError) as err:
        parse_orders(json.dumps(bad))
    assert err.value.problems == [
        "line 1: payments[0].way is not a field of a payment",
        "line 1: payments[0].amount must be more than 0",
        "line 1: payments[0].date is not a date (YYYY-MM-DD or ISO 8601): 'nope'",
        "line 1: payments[0].method is required",
    ]


@pytest.mark.parametrize("provider", registry.names())
def test_add_refuses_payments_a_provider_cannot_take(provider: str) -> None:
    parsed = parse_orders(json.dumps(order(provider, "MUG", PAID)))
    how = registry.get(provider).capabilities.documents.payments
    refused = unsupported(provider, parsed, {})
    if how == "none":
        assert refused == [
            f"line 1: {provider} cannot take payments (payments) (README: the provider table)"
        ]
        return
    part = parse_orders(json.dumps(order(provider, "MUG", PAID[:1])))
    if how == "applied":  # each applied to the posted invoice, into the account named for them
        assert refused == [
            f"line 1: {provider} applies payments into the account named by the connection's "
            f"payment_account_code: set it first (synccli connections set NAME "
            "payment_account_code=...)"
        ]
        named = {"payment_account_code": "090"}
        assert unsupported(provider, parsed, named) == []
        assert unsupported(provider, part, named) == []  # part paid: the rest stays due
        return
    assert refused == []
    assert unsupported(provider, part, {}) == [
        f"line 1: payments add up to 20.00, not the order's total 23.00: {provider} rings the "
        "sale up paid in full"
    ]


def _types(provider: str, running: harness.Running) -> dict[str, str]:
    if provider == "lightspeed":
        return {"payment_types": "card=3,gift_card=2"}
    ids = running.app.payment_types
    return {"payment_types": f"card={ids[0]['id']},gift_card={ids[-1]['id']}"}


def _sent(provider: str, invoice: Any) -> list[tuple[Decimal, str]]:
    if provider == "lightspeed":
        rows = invoice.body["SalePayments"]["SalePayment"]
        return [(Decimal(r["amount"]), r["paymentTypeID"]) for r in rows]
    return [(Decimal(str(p["amount"])), p["type"]["config_id"]) for p in invoice.body["payments"]]


@pytest.mark.parametrize(
    "provider",
    [
        p
        for p in registry.suite_names()
        if registry.get(p).capabilities.documents.payments == "in_sale"
    ],
)
def test_a_sale_is_rung_up_with_the_orders_payments(
    store: Store, cli: Any, tmp_path: Path, provider: str
) -> None:
    running = harness.start(provider, products=5, customers=3, time_scale=SCALE)
    try:
        settings = _types(provider, running)
        harness.add_connection(store, "shop", running, time_scale=SCALE, **settings)
        world = running.app.catalogue.tenant(running.app.tenant)
        known = next(iter(world.products.values()))
        path = tmp_path / "order.json"
        path.write_text(json.dumps(order(provider, known.code, PAID)), encoding="utf-8")
        result = cli("invoices", "add", str(path), "-c", "shop")
        assert result.exit_code == 0, result.stderr
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        [invoice] = list(world.invoices.values())
        assert Decimal(invoice.total) == Decimal("23.00")
        card, gift = (pair.split("=")[1] for pair in settings["payment_types"].split(","))
        assert _sent(provider, invoice) == [(Decimal("20.00"), card), (Decimal("3.00"), gift)]
        with store.session() as s:
            job = s.scalar(select(InvoiceJob))
            assert job is not None and job.state == "posted", job and job.last_error
            assert len(s.scalars(select(OrderPayment)).all()) == 2
        # shown with the sale that carries them: posted, under the sale's id
        shown = cli("invoices", "show", "WEB-9", "-c", "shop", "--json")
        assert shown.exit_code == 0, shown.stderr
        assert [
            (p["amount"], p["method"], p["state"], p["remote_id"])
            for p in json.loads(shown.stdout)["payments"]
        ] == [
            ("20.00", "card", "posted", job.remote_id),
            ("3.00", "gift_card", "posted", job.remote_id),
        ]
        status = json.loads(cli("status", "-c", "shop", "--json").stdout)
        assert status[0]["payments"] == {"posted": 2, "pending": 0, "refused": 0}
    finally:
        running.stop()
