"""Tax-inclusive and tax-exclusive orders reach each provider with the order's own total (issue 22,
line 1).

A property test: 1,000 generated orders (mixed tax rates, quantities with up to 4 decimals,
discount lines with negative prices) in each mode, for every provider that takes the mode. Each
order's total is the money rule's (docs/orders.md); ``invoices add``'s validation accepts all of
them (0 refusals for rounding); the connector's request body (the very body ``post_invoice``
sends) is handed to the simulator in-process, and the simulator's total equals the order's to
the cent. A provider whose capabilities say it cannot take tax-inclusive prices is asked for the
refusal instead (``invoices add`` names what is not supported).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest

from synccli import registry
from synccli.connectors.base import InvoiceDraft, InvoiceLine
from synccli.connectors.lightspeed import LightspeedConnector
from synccli.connectors.lightspeed_x import LightspeedXConnector
from synccli.connectors.unleashed import UnleashedConnector
from synccli.connectors.wire import line_amounts
from synccli.connectors.xero import XeroConnector
from synccli.sandbox.core import Request
from synccli.sandbox.lightspeed import LightspeedSandbox
from synccli.sandbox.lightspeed_x import LightspeedXSandbox
from synccli.sandbox.unleashed import UnleashedSandbox
from synccli.sandbox.xero import API, NO_LIMITS, XeroSandbox
from synccli.sync.orders import OrderInputError, order_total, parse_orders, unsupported

ORDERS = 1000
RATES = (Decimal("0.15"), Decimal("0.125"), Decimal("0"))


def _places(rng: random.Random, low: int, high: int, places: int) -> Decimal:
    return Decimal(rng.randint(low, high)).scaleb(-places)


def generated(
    rng: random.Random, inclusive: bool, n: int, rates: tuple[Decimal, ...] = RATES
) -> list[dict[str, Any]]:
    """``n`` orders as ``invoices add`` reads them, each total by the money rule."""
    orders = []
    for i in range(n):
        lines = []
        for _ in range(rng.randint(1, 6)):
            places = rng.choice((0, 2, 4))
            quantity = _places(rng, 1, 50 * 10**places, places)  # up to 50, 0 to 4 decimals
            places = rng.choice((2, 3, 4))
            price = _places(rng, 1, 500 * 10**places, places)  # up to 500.0000
            lines.append({"quantity": quantity, "unit_price": price, "rate": rng.choice(rates)})
        if rng.random() < 0.3:  # a discount line: a negative price, one unit
            lines.append(
                {
                    "quantity": Decimal(1),
                    "unit_price": -_places(rng, 1, 2000, 2),
                    "rate": rng.choice(rates),
                }
            )
        total = sum(
            (
                sum(line_amounts(ln["quantity"], ln["unit_price"], ln["rate"], inclusive=inclusive))
                for ln in lines
            ),
            Decimal("0.00"),
        )
        orders.append({"number": f"P-{i}", "lines": lines, "total": total})
    return orders


def as_json(order: dict[str, Any], inclusive: bool, tax_codes: dict[Decimal, str]) -> str:
    return json.dumps(
        {
            "number": order["number"],
            "date": "2026-05-01",
            "currency": "NZD",
            "customer": {"email": "p@example.com", "name": "P"},
            "prices_include_tax": inclusive,
            "lines": [
                {
                    "sku": "SKU-1",
                    "description": "thing",
                    "quantity": str(ln["quantity"]),
                    "unit_price": str(ln["unit_price"]),
                    "tax_rate": str(ln["rate"]),
                    **({"tax_code": tax_codes[ln["rate"]]} if ln["rate"] else {}),
                }
                for ln in order["lines"]
            ],
            "total": str(order["total"]),
        }
    )


XERO_TAX = {Decimal("0.15"): "OUTPUT2", Decimal("0.125"): "OUTPUT", Decimal("0"): "NONE"}


def test_the_money_rule_in_both_modes() -> None:
    # inclusive: the customer pays round2(q x p); its tax is the tax fraction of that
    assert line_amounts(Decimal(1), Decimal("20.00"), Decimal("0.095"), inclusive=True) == (
        Decimal("18.26"),
        Decimal("1.74"),
    )  # Xero's spec example (LineAmountTypes Inclusive, TaxAmount 1.74, SubTotal 18.26)
    assert line_amounts(Decimal(3), Decimal("0.335"), Decimal("0.15"), inclusive=True) == (
        Decimal("0.88"),
        Decimal("0.13"),
    )
    assert line_amounts(Decimal(3), Decimal("0.335"), Decimal("0.15")) == (
        Decimal("1.01"),
        Decimal("0.15"),
    )


@pytest.mark.parametrize("inclusive", [False, True], ids=["exclusive", "inclusive"])
def test_generated_orders_pass_validation_with_their_money_rule_total(inclusive: bool) -> None:
    orders = generated(random.Random(22), inclusive, ORDERS)
    text = "\n".join(as_json(o, inclusive, XERO_TAX) for o in orders)
    parsed = parse_orders(text)  # raises on any refusal
    assert len(parsed) == ORDERS
    assert all(p.prices_include_tax is inclusive for p in parsed)
    for p, o in zip(parsed, orders, strict=True):
        assert order_total(p.lines, inclusive) == p.total == o["total"]


def test_an_inclusive_total_by_the_exclusive_rule_is_refused_naming_the_rule() -> None:
    order = json.loads(
        as_json(
            {
                "number": "X-1",
                "lines": [{"quantity": 1, "unit_price": Decimal("11.50"), "rate": RATES[0]}],
                "total": Decimal("13.23"),  # 11.50 + 15%: the exclusive reading
            },
            True,
            XERO_TAX,
        )
    )
    with pytest.raises(OrderInputError) as err:
        parse_orders(json.dumps(order))
    assert "total 13.23 does not match the lines (11.50" in str(err.value)
    assert "prices including tax" in str(err.value)
    order["prices_include_tax"] = "yes"
    with pytest.raises(OrderInputError, match="prices_include_tax must be true or false"):
        parse_orders(json.dumps(order))


def _xero_post(app: XeroSandbox, creds: dict[str, Any], element: dict[str, Any]) -> Any:
    req = Request(
        "PUT",
        f"{API}/Invoices",
        "summarizeErrors=false&unitdp=4",
        {
            "authorization": f"Bearer {creds['access_token']}",
            "xero-tenant-id": creds["tenant_id"],
            "accept": "application/json",
            "content-type": "application/json",
        },
        json.dumps({"Invoices": [element]}).encode(),
        {},
    )
    resp = app.handle(req)
    assert resp is not None and resp.status == 200, resp and resp.body
    (el,) = resp.body["Invoices"]
    assert el.get("StatusAttributeString") == "OK", el.get("ValidationErrors")
    return el


class _Xero:
    tax = XERO_TAX

    def __init__(self) -> None:
        self.app = XeroSandbox(seed=22, products=5, customers=1, limits=NO_LIMITS)
        self.creds = self.app.credentials()
        world = self.app.world()
        self.customer = next(iter(world.customers.values())).id
        self.items = [(p.id, p.code) for p in world.products.values()]
        self.connector = XeroConnector.__new__(XeroConnector)
        self.connector.settings = {}

    def total(self, draft: InvoiceDraft) -> Decimal:
        el = _xero_post(self.app, self.creds, self.connector.invoice_body(draft))
        assert el["LineAmountTypes"] == ("Inclusive" if draft.prices_include_tax else "Exclusive")
        return Decimal(str(el["Total"]))


class _Unleashed:
    tax = {Decimal("0.15"): "G.S.T.", Decimal("0"): "NONE"}

    def __init__(self) -> None:
        self.app = UnleashedSandbox(seed=22, products=5, customers=1)
        self.world = self.app.world()
        self.customer = next(iter(self.world.customers.values())).id
        products = list(self.world.products.values())
        self.items = [(p.id, p.code) for p in products[1:]]
        self.connector = UnleashedConnector.__new__(UnleashedConnector)
        self.connector.settings = {"charge_item": products[0].code}  # the rounding line's
        self.connector.warehouse = None

    def total(self, draft: InvoiceDraft) -> Decimal:
        guid = str(uuid.uuid4())
        # the simulator's own validation and totals (it refuses a LineTax off by a cent)
        checked = self.app._validate_order(self.world, self.connector.order_body(draft, guid), guid)
        return Decimal(checked["total"])


class _Lightspeed:
    tax = {Decimal("0.15"): "GST", Decimal("0.0825"): "Sales Tax", Decimal("0"): "NONE"}
    categories = {"GST": ("1", Decimal("0.15")), "Sales Tax": ("2", Decimal("0.0825"))}

    def __init__(self) -> None:
        self.app = LightspeedSandbox(seed=22, products=5, customers=1)
        items = [p for p, _ in self.app.items()]
        self.customer = ""
        self.items = [(str(p.seq), p.code) for p in items[1:]]
        self.connector = LightspeedConnector(
            cast(Any, None), {"account_id": "1", "charge_item": str(items[0].seq)}
        )

    def total(self, draft: InvoiceDraft) -> Decimal:
        draft.lines = [
            replace(ln, tax_code=ln.tax_code if ln.tax_rate else None) for ln in draft.lines
        ]
        resp = self.app._post_sale(
            self.connector.sale_body(draft, self.categories), self.app.tenant
        )
        assert resp.status == 200, resp.body
        return Decimal(resp.body["Sale"]["calcTotal"])


class _InProcessSales:
    """The one call X-Series' post makes (``POST /sales``), handed to the simulator's own
    handler in-process (its reference lists are primed, so no other call is made)."""

    base_url = "http://x.test"

    def __init__(self, app: LightspeedXSandbox) -> None:
        self.app = app

    def json(self, method: str, path: str, json_body: Any = None, **_: Any) -> Any:
        assert (method, path.rsplit("/", 1)[-1]) == ("POST", "sales"), path
        body = json.dumps(json_body).encode()
        resp = self.app.h_post_sale(Request("POST", path, "", {}, body, {}))
        assert resp.status == 200, resp.body
        return resp.body


class _LightspeedX:
    tax = {Decimal("0.15"): "GST", Decimal("0"): "NONE"}

    def __init__(self) -> None:
        app = self.app = LightspeedXSandbox(seed=22, products=5, customers=1)
        ids = list(app._products)
        self.customer = ""
        self.items = [(pid, pid) for pid in ids[1:]]
        settings = {"domain_prefix": "shop", "charge_item": ids[0]}
        self.connector = LightspeedXConnector(cast(Any, _InProcessSales(app)), settings)
        self.connector._reference = {
            "taxes": {"GST": [app.gst_id, "0.15"], "No Tax": [app.no_tax_id, "0"]},
            "outlet_id": app.outlets[0]["id"],
            "register_id": app.register_rows[0]["id"],
            "user_id": app.users[0]["id"],
            "payment_type_id": app.payment_types[0]["id"],
            "lists": {},
        }

    def total(self, draft: InvoiceDraft) -> Decimal:
        draft.lines = [
            replace(ln, tax_code=ln.tax_code if ln.tax_rate else None) for ln in draft.lines
        ]
        return Decimal(str(self.connector.post_invoice(draft, draft.number).total))


POSTERS: dict[str, Any] = {
    "xero": _Xero,
    "unleashed": _Unleashed,
    "lightspeed": _Lightspeed,
    "lightspeed-x": _LightspeedX,
}
MODES = [
    pytest.param(
        provider,
        inclusive,
        id=f"{provider}-{'inc' if inclusive else 'exc'}",
    )
    for provider in POSTERS
    for inclusive in (False, True)
    if not inclusive or registry.get(provider).capabilities.documents.tax_inclusive != "none"
]


@pytest.mark.parametrize(("provider", "inclusive"), MODES)
def test_provider_totals_equal_the_orders(provider: str, inclusive: bool) -> None:
    poster = POSTERS[provider]()
    rng = random.Random(22)
    rates = tuple(poster.tax)
    rounding_lines = 0
    for order in generated(rng, inclusive, ORDERS, rates):
        lines = []
        for ln in order["lines"]:
            remote_id, code = rng.choice(poster.items)
            lines.append(
                InvoiceLine(
                    product_remote_id=remote_id,
                    code=code,
                    description="thing",
                    quantity=ln["quantity"],
                    unit_price=ln["unit_price"],
                    tax_code=poster.tax[ln["rate"]],
                    tax_rate=ln["rate"],
                )
            )
        draft = InvoiceDraft(
            number=order["number"],
            date=datetime(2026, 5, 1, tzinfo=UTC),
            currency="NZD",
            customer_remote_id=poster.customer,
            lines=lines,
            total=order["total"],
            prices_include_tax=inclusive,
        )
        rounding_lines += len(draft.exclusive_lines()) - len(lines)
        assert poster.total(draft) == order["total"], order["number"]
    print(
        f"{provider} {'inclusive' if inclusive else 'exclusive'}: {ORDERS} orders, "
        f"{rounding_lines} rounding lines"
    )


@pytest.mark.parametrize("provider", registry.names())
def test_a_provider_that_cannot_take_inclusive_prices_refuses_them_at_add(provider: str) -> None:
    """``invoices add`` names what the connection's provider cannot do, in one line."""
    order = generated(random.Random(1), True, 1)[0]
    parsed = parse_orders(as_json(order, True, XERO_TAX))
    problems = unsupported(provider, parsed)
    documents = registry.get(provider).capabilities.documents
    if documents.tax_inclusive == "native":
        assert problems == []
    elif documents.tax_inclusive == "converted":  # its rounding line needs the service item
        assert problems == [
            f"line 1: {provider} takes the rounding line of tax-inclusive prices only against "
            "a service item: set the connection's charge_item first (synccli connections set "
            "NAME charge_item=...)"
        ]
        assert unsupported(provider, parsed, {"charge_item": "1"}) == []
    else:
        assert problems == [
            f"line 1: {provider} cannot take tax-inclusive prices (prices_include_tax) "
            "(README: the provider table)"
        ]
    exclusive = parse_orders(
        as_json(order | {"total": Decimal(0)}, False, XERO_TAX).replace(
            '"total": "0"', f'"total": "{order_total(parsed[0].lines, False)}"'
        )
    )
    assert unsupported(provider, exclusive) == []
