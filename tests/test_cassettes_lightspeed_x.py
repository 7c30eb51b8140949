"""Cassettes recorded from the Lightspeed X-Series simulator: each contract method's exchanges,
replayed without any server (recorded once when the cassette is missing). Tokens and secrets
are filtered out; the simulator's address is replaced by a fixed one."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal
from pathlib import Path

import pytest
import vcr
from lightspeed_x_helpers import make_app, make_connector, serve

from synccli import secrets
from synccli.connectors.base import InvoiceDraft, InvoiceLine, NewCustomer, NewProduct

CASSETTES = Path(__file__).parent / "cassettes" / "lightspeed-x"
FIXED = "http://sandbox.test"
_HOST = re.compile(r"^https?://(127\.0\.0\.1|localhost):\d+")


class _Fixed:
    url = FIXED


def _scrub_request(request):
    request.uri = _HOST.sub(FIXED, request.uri)
    if request.body:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        request.body = secrets.redact(body).encode()
    return request


def _vcr() -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="once",
        match_on=["method", "path", "query"],
        filter_headers=["authorization"],
        filter_post_data_parameters=["client_secret", "refresh_token", "code"],
        before_record_request=_scrub_request,
        decode_compressed_response=True,
    )


def _scenario(name, conn, app):
    world = app.world()
    products = sorted(world.products.values(), key=lambda p: p.code)
    customers = sorted(world.customers.values(), key=lambda c: c.account_number)
    if name == "changed_products":
        return sorted(r.code for page in conn.changed_products(None) for r in page.records)
    if name == "changed_stock":
        return len([r for page in conn.changed_stock(None) for r in page.records])
    if name == "get_products":
        return sorted(p.code for p in conn.get_products([products[1].id, products[3].id]))
    if name == "find_product":
        return conn.find_product(products[2].code).remote_id
    if name == "create_product":
        made = conn.create_product(NewProduct("REC-1", "Recorded mug", Decimal("7.25")))
        return made.code, made.price
    if name == "changed_customers":
        return sorted(r.account_number for p in conn.changed_customers(None) for r in p.records)
    if name == "find_customers":
        return [c.remote_id for c in conn.find_customers(email=customers[1].email)]
    if name == "create_customer":
        made = conn.create_customer(NewCustomer("Rec Buyer", account_number="REC-9"))
        return made.account_number
    if name == "post_invoice":
        line = InvoiceLine(
            products[0].id,
            products[0].code,
            "mug",
            Decimal(2),
            Decimal("10.00"),
            "GST",
            tax_rate=Decimal("0.15"),
        )
        inv = InvoiceDraft(
            "REC-INV-1", app.clock.now(), "NZD", customers[0].id, [line], total=Decimal("23.00")
        )
        return conn.post_invoice(inv, "rec-inv-1").total
    if name == "find_invoice":
        return conn.find_invoice("REC-404")
    if name == "ping":
        return conn.ping()["store"]
    raise AssertionError(name)


EXPECTED = {
    "changed_products": [f"SKU-{i:05d}" for i in range(1, 7)],
    "changed_stock": 6,
    "get_products": ["SKU-00002", "SKU-00004"],
    "create_product": ("REC-1", Decimal("7.25")),
    "create_customer": "REC-9",
    "post_invoice": Decimal("23.00"),
    "find_invoice": None,
    "ping": "sandboxstore",
}


@pytest.mark.parametrize(
    "name",
    [
        "changed_products",
        "changed_stock",
        "get_products",
        "find_product",
        "create_product",
        "changed_customers",
        "find_customers",
        "create_customer",
        "post_invoice",
        "find_invoice",
        "ping",
    ],
)
def test_recorded_cassette_replays_every_contract_method(name):
    path = CASSETTES / f"{name}.yaml"
    app = make_app(seed=11, products=6, customers=4)
    record = not path.exists()
    with serve(app) if record else contextlib.nullcontext(_Fixed()) as server:
        conn, _ = make_connector(app, server, personal=True)
        with _vcr().use_cassette(str(path)) as cassette:
            result = _scenario(name, conn, app)
        assert (record or cassette.all_played) and conn.http.calls == len(cassette)
    world = app.world()
    if name == "find_product":
        assert result == sorted(world.products.values(), key=lambda p: p.code)[2].id
    elif name == "changed_customers":
        assert result == sorted(c.account_number for c in world.customers.values())
    elif name == "find_customers":
        assert result == [sorted(world.customers.values(), key=lambda c: c.account_number)[1].id]
    else:
        assert result == EXPECTED[name]
    assert "Bearer" not in path.read_text() and "lsxp_" not in path.read_text()
