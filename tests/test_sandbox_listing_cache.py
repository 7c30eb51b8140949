"""The simulators' kept renderings: a listing page written from kept texts is byte for byte the page
the row dicts would give, and any change to a product (through the API, the catalogue's mutations
or a test setting a field) shows in the next listing, re-rendering that product only."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from synccli.clock import SimClock
from synccli.sandbox import lightspeed, unleashed
from synccli.sandbox.core import Response, SandboxApp
from synccli.sandbox.data import Product, product_revision

ODD_TEXTS = [
    'Quote "x" and \\ back',
    "caf\u00e9 \u2603 \U0001f600",
    "tab\tnew\nline\x00\x1f",
    "/Date(123)/",
    'a"/Date(1)/',
    '"/Date(-5)/"',
    "/Date(12)/x",
    "100% </script>",
    "",
]


def call(app: SandboxApp, path: str, query: str = "", headers: dict[str, str] | None = None):
    """One request straight into the WSGI app: (status, headers, body)."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "sandbox.test",
    }
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    seen: dict[str, Any] = {}

    def start_response(status: str, head: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(head)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def oddify(products: list[Product]) -> None:
    """Fields no generated product has: escapes, dates in names, odd stock and prices."""
    for p, text in zip(products, ODD_TEXTS, strict=False):
        p.name = text
        p.code = f"ODD-{text}"
        p.description = text
    products[0].stock = Decimal("-3.50")
    products[1].stock = Decimal("2.500")
    products[2].price = Decimal("12.345")
    products[3].tracked = False
    products[4].archived = True
    products[5].updated_at = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    products[6].stock_updated_at = datetime(1960, 1, 1, tzinfo=UTC)  # before 1970: negative ms
    products[7].created_at = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(microseconds=999999)


def test_a_product_revision_moves_with_every_field_set_and_only_then():
    clock = SimClock()
    app = lightspeed.LightspeedSandbox(products=3, clock=clock)
    p = next(iter(app.catalogue.tenant(app.tenant).products.values()))
    first = product_revision(p)
    assert first is not None and product_revision(p) == first
    p.price = p.price  # even the same value
    second = product_revision(p)
    assert second is not None and second != first
    app.catalogue.change_stock(app.tenant, 3)
    assert product_revision(p) not in (first, second)


# ---------------------------------------------------------------------------------------------
# Lightspeed


class LS:
    def __init__(self, products: int = 120) -> None:
        self.clock = SimClock()
        self.app = lightspeed.LightspeedSandbox(
            products=products, clock=self.clock, limits={"bucket_size": 1e12, "drip": 1e9}
        )
        token = self.app.issue_tokens(ttl=10**8)["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.world = self.app.catalogue.tenant(self.app.tenant)

    def pages(self, entity: str, query: str) -> Iterator[tuple[str, bytes]]:
        path = f"/API/V3/Account/{self.app.tenant}/{entity}.json"
        while True:
            status, _, body = call(self.app, path, query, self.headers)
            assert status == "200 OK", body
            yield query, body
            nxt = json.loads(body)["@attributes"]["next"]
            if not nxt:
                return
            parts = urlsplit(nxt)
            path, query = parts.path, parts.query

    def by_id(self, entity: str) -> dict[str, Any]:
        """What each row renders as now, without any kept rendering: a fresh entry per item."""
        rows: dict[str, Any] = {}
        for p, gone in self.app.items():
            base, attach = self.app._item_row(p, gone)
            if entity == "Item":
                rows[base["itemID"]] = attach
            else:
                for shop in attach.shops():  # type: ignore[attr-defined]
                    rows[shop.row["itemShopID"]] = shop
        return rows

    def check(self, entity: str, query: str, rels: list[str]) -> int:
        """Every page of the listing equals the encoded row dicts; returns the rows seen."""
        fresh = self.by_id(entity)
        pk = lightspeed.SPECS[entity].pk
        seen = 0
        for _, body in self.pages(entity, query):
            parsed = json.loads(body)
            rows = parsed.get(entity, [])
            rows = rows if isinstance(rows, list) else [rows]
            expected: dict[str, Any] = {"@attributes": parsed["@attributes"]}
            if rows:
                dicts = [fresh[row[pk]](rels) for row in rows]
                expected[entity] = dicts[0] if len(dicts) == 1 else dicts
            assert body == Response(200, expected).encode()
            seen += len(rows)
        return seen


ITEMS = "load_relations=" + quote('["ItemShops"]', safe="") + "&archived=true&sort=timeStamp"


def test_lightspeed_row_texts_are_the_rows_json_encoded():
    ls = LS(40)
    products = sorted(ls.world.products.values(), key=lambda p: p.seq)
    oddify(products)
    for p in products:
        for gone in (False, True):
            entry = lightspeed._ItemEntry(p, gone)
            for rels in ([], ["ItemShops"], ["ItemShops", "ItemShops"]):
                assert entry.text(rels) == Response(200, entry(rels)).encode()
            for shop in entry.shops():
                assert shop.text([]) == Response(200, shop([])).encode()
            for field in lightspeed.SPECS["Item"].sortable:
                key = (lightspeed._sort_value(field, entry.base[field]), int(entry.base["itemID"]))
                assert entry.sort_key(field, "itemID") == key
            for field in lightspeed.SPECS["ItemShop"].sortable:
                shop = entry.shops()[1]
                key = (lightspeed._sort_value(field, shop.row[field]), int(shop.row["itemShopID"]))
                assert shop.sort_key(field, "itemShopID") == key


@pytest.mark.parametrize(
    ("entity", "query", "rels"),
    [
        ("Item", ITEMS + "&limit=37", ["ItemShops"]),
        ("Item", "sort=-timeStamp&archived=true&limit=100", []),
        ("Item", "sort=description&archived=only&load_relations=all&limit=1", ["ItemShops"]),
        (
            "Item",
            "load_relations=" + quote('["ItemShops"]') + "&ItemShops.qoh=>,100",
            ["ItemShops"],
        ),
        ("ItemShop", "shopID=0&sort=timeStamp&limit=100", []),
        ("ItemShop", "sort=-itemID&limit=64", []),
    ],
)
def test_lightspeed_pages_are_the_rows_encoded_before_and_after_every_kind_of_change(
    entity: str, query: str, rels: list[str]
):
    ls = LS()
    app, clock = ls.app, ls.clock
    products = sorted(ls.world.products.values(), key=lambda p: p.seq)
    ls.check(entity, query, rels)
    ls.check(entity, query, rels)  # the kept texts, read again
    clock.advance(3600)
    app.catalogue.change_prices(app.tenant, 7)
    app.catalogue.change_stock(app.tenant, 7)
    app.catalogue.change_descriptions(app.tenant, 3)
    app.catalogue.archive(app.tenant, 4)
    app.catalogue.delete(app.tenant, 5)
    oddify(products[10:20])
    sale_item = products[30]
    before = sale_item.stock
    status, _, _ = post(ls, "Sale.json", _completed_sale(str(sale_item.seq)))
    assert status == "200 OK" and sale_item.stock == before - 2
    status, _, _ = post(ls, "Item.json", {"description": "New \u00e9", "customSku": "NEW-1"})
    assert status == "200 OK"
    status, _, _ = delete(ls, f"Item/{products[31].seq}.json")
    assert status == "200 OK" and products[31].archived
    assert ls.check(entity, query, rels) > 0


def post(ls: LS, path: str, body: Any) -> tuple[str, dict, bytes]:
    return _send(ls, "POST", path, json.dumps(body).encode())


def delete(ls: LS, path: str) -> tuple[str, dict, bytes]:
    return _send(ls, "DELETE", path, b"")


def _send(ls: LS, method: str, path: str, body: bytes) -> tuple[str, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": f"/API/V3/Account/{ls.app.tenant}/{path}",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "sandbox.test",
        "HTTP_AUTHORIZATION": ls.headers["Authorization"],
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, head: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(head)

    out = b"".join(ls.app(environ, start_response))
    return seen["status"], seen["headers"], out


def _completed_sale(item_id: str) -> dict[str, Any]:
    return {
        "shopID": 1,
        "registerID": 1,
        "employeeID": 1,
        "completed": True,
        "SaleLines": {"SaleLine": {"itemID": item_id, "unitQuantity": 2}},
        "SalePayments": {"SalePayment": {"amount": "100000", "paymentTypeID": "1"}},
    }


def test_lightspeed_renders_again_only_the_products_that_changed(monkeypatch):
    ls = LS(200)
    made: list[str] = []

    class Counted(lightspeed._ItemEntry):
        def __init__(self, p: Product, gone: bool, codes: dict[str, str] | None = None) -> None:
            made.append(p.id)
            super().__init__(p, gone, codes)

    monkeypatch.setattr(lightspeed, "_ItemEntry", Counted)
    query = ITEMS + "&limit=50"
    ls.check("Item", query, ["ItemShops"])
    made.clear()
    ls.check("Item", query, ["ItemShops"])
    assert made == [p.id for p, _ in ls.app.items()]  # only the check's own fresh renders
    made.clear()
    changed = ls.app.catalogue.change_stock(ls.app.tenant, 3)
    list(ls.pages("Item", query))
    assert sorted(made) == sorted(p.id for p in changed)


# ---------------------------------------------------------------------------------------------
# Unleashed


class UN:
    def __init__(self, products: int = 150, **kw: Any) -> None:
        self.clock = SimClock()
        self.app = unleashed.UnleashedSandbox(
            products=products,
            clock=self.clock,
            limits={"per_month": None, "per_minute": None},
            **kw,
        )
        creds = self.app.credentials()
        self.api_id, self.key = creds["api_id"], creds["api_key"]
        self.world = self.app.world()

    def call(self, method: str, path: str, query: str = "", body: Any = None):
        raw = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(raw),
            "CONTENT_LENGTH": str(len(raw)),
            "CONTENT_TYPE": "application/json",
            "wsgi.url_scheme": "http",
            "HTTP_HOST": "sandbox.test",
            "HTTP_API_AUTH_ID": self.api_id,
            "HTTP_API_AUTH_SIGNATURE": unleashed.sign(self.key, query),
            "HTTP_ACCEPT": "application/json",
        }
        seen: dict[str, Any] = {}

        def start_response(status: str, head: list[tuple[str, str]]) -> None:
            seen["status"] = status

        out = b"".join(self.app(environ, start_response))
        return seen["status"], out

    def check(self, endpoint: str, query: str) -> int:
        """Every page equals what _json writes for the records' dicts; returns the rows seen."""
        app, q = self.app, {k.lower(): v for k, v in _pairs(query)}
        allocated = app._allocated(self.world)
        number, seen = 1, 0
        while True:
            status, body = self.call("GET", f"/{endpoint}/{number}", query)
            assert status == "200 OK", body
            parsed = json.loads(body)
            records = []
            for item in parsed["Items"]:
                p = self.world.products[item["Guid"]]
                if endpoint == "Products":
                    records.append(app.product_json(p, unleashed._truthy(q.get("brief"))))
                else:
                    alloc = allocated.get(p.id, Decimal(0))
                    records.append(app.stock_json(p, alloc, bool(q.get("warehousecode"))))
            expected = app._json({"Pagination": parsed["Pagination"], "Items": records})
            assert body == expected.encode()
            seen += len(records)
            if number >= parsed["Pagination"]["NumberOfPages"]:
                return seen
            number += 1


def _pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(part.split("=", 1)) for part in query.split("&") if part]  # type: ignore[misc]


def test_unleashed_record_texts_are_what_json_writes():
    for offset in (0.0, 13, -5.5):
        un = UN(40, timestamp_offset_hours=offset)
        app = un.app
        products = sorted(un.world.products.values(), key=lambda p: p.seq)
        oddify(products)
        for p in products:
            for brief in (False, True):
                text = app.product_text(p, brief)
                assert text == app._json(app.product_json(p, brief)).encode().decode()
            for allocated in (Decimal(0), Decimal("2"), Decimal("2.50"), Decimal("-0")):
                for warehouse in (False, True):
                    text = app.stock_text(p, allocated, warehouse)
                    expected = app._json(app.stock_json(p, allocated, warehouse))
                    assert text == expected.encode().decode()


@pytest.mark.parametrize(
    ("endpoint", "query"),
    [
        ("Products", "pageSize=40&includeObsolete=true"),
        ("Products", "pageSize=33&brief=true&orderBy=LastModifiedOn"),
        ("StockOnHand", "pageSize=40&warehouseCode=W1"),
        ("StockOnHand", "pageSize=1000"),
    ],
)
def test_unleashed_pages_are_the_records_encoded_before_and_after_every_kind_of_change(
    endpoint: str, query: str
):
    un = UN()
    app, clock = un.app, un.clock
    app.move_all_stock()
    products = sorted(un.world.products.values(), key=lambda p: p.seq)
    assert un.check(endpoint, query) > 0
    un.check(endpoint, query)  # the kept texts, read again
    clock.advance(3600)
    app.catalogue.change_prices(app.tenant, 7)
    app.catalogue.change_stock(app.tenant, 7)
    app.catalogue.archive(app.tenant, 4)
    app.catalogue.delete(app.tenant, 5)
    oddify(products[10:20])
    assert un.check(endpoint, query) > 0
    # a placed order allocates stock (on an untracked product, the product itself is unchanged)
    untracked = products[40]
    untracked.tracked = False
    customer = next(iter(un.world.customers.values()))
    order = {
        "Customer": {"Guid": customer.id},
        "OrderStatus": "Placed",
        "SalesOrderLines": [
            {"Product": {"Guid": untracked.id}, "OrderQuantity": 3, "UnitPrice": 2},
            {"Product": {"Guid": products[41].id}, "OrderQuantity": 1, "UnitPrice": 2},
        ],
    }
    guid = "21111111-2222-4333-8444-555555555555"
    assert un.call("POST", f"/SalesOrders/{guid}", body=order)[0] == "201 Created"
    assert un.check(endpoint, query) > 0
    assert un.call("POST", f"/SalesOrders/{guid}/Complete")[0].startswith("500")  # 1st fails
    assert un.call("POST", f"/SalesOrders/{guid}/Complete")[0] == "200 OK"
    assert un.check(endpoint, query) > 0
    update = {"ProductCode": products[42].code, "ProductDescription": "Replaced", "Obsolete": True}
    assert un.call("POST", f"/Products/{products[42].id}", body=update)[0] == "201 Created"
    app.timestamp_offset_hours = 13
    assert un.check(endpoint, query) > 0


def test_unleashed_renders_again_only_the_products_that_changed(monkeypatch):
    un = UN(200)
    app = un.app
    app.move_all_stock()
    made: list[str] = []
    product_text = unleashed.UnleashedSandbox.product_text

    def counted(self: unleashed.UnleashedSandbox, p: Product, brief: bool = False) -> str:
        made.append(p.id)
        return product_text(self, p, brief)

    monkeypatch.setattr(unleashed.UnleashedSandbox, "product_text", counted)
    query = "pageSize=50&includeObsolete=true"
    un.check("Products", query)
    assert len(made) == 200
    made.clear()
    un.check("Products", query)
    assert made == []
    changed = app.catalogue.change_prices(app.tenant, 3)
    un.check("Products", query)
    assert sorted(made) == sorted(p.id for p in changed)
