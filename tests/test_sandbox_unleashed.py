"""The Unleashed simulator, spoken to over real HTTP on loopback with hand-signed requests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from synccli.clock import SimClock
from synccli.sandbox.core import SandboxServer
from synccli.sandbox.unleashed import (
    QUOTA_DESCRIPTION,
    UnleashedSandbox,
    create,
    dotnet_date,
    parse_when,
    sign,
)

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CENT = Decimal("0.01")
RATE = Decimal("0.15")


class Client:
    """A bare Unleashed client: signs exactly the query string it sends."""

    def __init__(self, url: str, creds: dict[str, str]) -> None:
        self.url = url
        self.api_id = creds["api_id"]
        self.key = creds["api_key"]
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        query: str = "",
        body: Any = None,
        *,
        accept: str | None = "application/json",
        signed: str | None = None,
        api_id: str | None = None,
    ) -> requests.Response:
        headers = {
            "api-auth-id": api_id if api_id is not None else self.api_id,
            "api-auth-signature": sign(self.key, query if signed is None else signed),
            "Content-Type": "application/json",
            "client-type": "tests/sandbox",
        }
        if accept is not None:
            headers["Accept"] = accept
        url = self.url + path + (f"?{query}" if query else "")
        data = None if body is None else json.dumps(body)
        return self.session.request(method, url, headers=headers, data=data, timeout=10)

    def get(self, path: str, query: str = "", **kw: Any) -> requests.Response:
        return self.call("GET", path, query, **kw)

    def post(self, path: str, body: Any, query: str = "", **kw: Any) -> requests.Response:
        return self.call("POST", path, query, body, **kw)

    def items(self, path: str, query: str = "") -> list[dict[str, Any]]:
        resp = self.get(path, query)
        assert resp.status_code == 200, resp.text
        return resp.json()["Items"]


@contextmanager
def serve(**kw: Any) -> Iterator[tuple[UnleashedSandbox, Client, SimClock]]:
    clock = kw.pop("clock", None) or SimClock(START)
    app = UnleashedSandbox(clock=clock, **kw)
    with SandboxServer(app) as server:
        yield app, Client(server.url, app.credentials()), clock


@pytest.fixture
def env() -> Iterator[tuple[UnleashedSandbox, Client, SimClock]]:
    with serve(products=50, customers=30) as ctx:
        yield ctx


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def order_body(
    app: UnleashedSandbox, guid: str, number: str = "WEB-1001", qty: int = 2, **over: Any
) -> dict[str, Any]:
    """A valid sales order (the notes' example shape) for two of the sandbox's products."""
    world = app.world()
    p1, p2 = sorted(world.products.values(), key=lambda p: p.code)[:2]
    customer = next(iter(world.customers.values()))
    line1 = (p1.price * qty).quantize(CENT)
    tax1 = (line1 * RATE).quantize(CENT)
    line2 = p2.price
    tax2 = (line2 * RATE).quantize(CENT)
    body = {
        "Guid": guid,
        "OrderNumber": number,
        "OrderDate": "2026-01-05T10:00:00",
        "OrderStatus": "Parked",
        "Customer": {"Guid": customer.id},
        "Currency": {"CurrencyCode": "NZD"},
        "Tax": {"TaxCode": "G.S.T."},
        "SubTotal": float(line1 + line2),
        "TaxTotal": float(tax1 + tax2),
        "Total": float(line1 + line2 + tax1 + tax2),
        "SalesOrderLines": [
            {
                "LineNumber": 1,
                "Product": {"Guid": p1.id},
                "OrderQuantity": qty,
                "UnitPrice": float(p1.price),
                "DiscountRate": 0,
                "LineTotal": float(line1),
                "LineTax": float(tax1),
                "LineTaxCode": "G.S.T.",
            },
            {
                "LineNumber": 2,
                "Product": {"ProductCode": p2.code},
                "OrderQuantity": 1,
                "UnitPrice": float(p2.price),
                "DiscountRate": 0,
                "LineTotal": float(line2),
                "LineTax": float(tax2),
                "LineTaxCode": "G.S.T.",
            },
        ],
    }
    body.update(over)
    return body


# auth ---------------------------------------------------------------------------------------
def test_signature_check_values_from_the_notes() -> None:
    assert sign("test-api-key", "") == "mJXmOIXOEvaWU3yhLXyFd+DlMvZQxbttrlRgkdQOHMo="
    assert (
        sign("test-api-key", "customerCode=ACME") == "s6KpobrGkQepswTQvcBvSBIR2gerxSxdakOIby2olOA="
    )


def test_bad_auth_or_signature_rejected_with_403_and_description(env) -> None:
    app, client, _ = env
    assert client.get("/Customers").status_code == 200  # signs "" when there is no query
    assert client.get("/Customers", "customerCode=ACC").status_code == 200
    cases = [
        client.get("/Customers", "customerCode=ACME", signed="customerCode=ACMF"),  # other query
        client.get("/Customers", signed="customerCode=ACME"),
        client.get("/Customers", api_id=str(uuid.uuid4())),  # unknown API id
        client.get("/Customers", api_id=""),
    ]
    bare = requests.get(
        client.url + "/Customers", headers={"Accept": "application/json"}, timeout=10
    )
    for resp in [*cases, bare]:
        assert resp.status_code == 403
        assert resp.json() == {"Description": "Forbidden"}
    # The page number sits in the path and is not signed; the method and body are not either.
    assert client.get("/Products/2", "pageSize=10").status_code == 200
    assert app.counters.total() == 8


def test_signature_covers_the_exact_query_bytes(env) -> None:
    _, client, _ = env
    # parameter order is not canonicalised: sign what you send
    assert (
        client.get(
            "/Customers", "pageSize=5&customerCode=ACC", signed="customerCode=ACC&pageSize=5"
        ).status_code
        == 403
    )
    # encoded bytes are what is signed by default ...
    ok = client.get("/Customers", "contactEmail=a%2Bb%40x.test")
    assert ok.status_code == 200
    assert (
        client.get(
            "/Customers", "contactEmail=a%2Bb%40x.test", signed="contactEmail=a+b@x.test"
        ).status_code
        == 403
    )
    # ... and raw @ and : (as FL sent them) are fine
    assert (
        client.get(
            "/Customers", "contactEmail=a@x.test&modifiedSince=2014-10-08T00:00:00"
        ).status_code
        == 200
    )


def test_signature_form_switch_checks_the_decoded_query() -> None:
    with serve(products=3, customers=3, signature_form="decoded") as (_, client, _):
        query = "contactEmail=a%2Bb%40x.test"
        assert client.get("/Customers", query).status_code == 403
        assert client.get("/Customers", query, signed="contactEmail=a+b@x.test").status_code == 200
        assert client.get("/Customers", "customerCode=ACC").status_code == 200  # same either way


def test_accept_header_must_name_json(env) -> None:
    _, client, _ = env
    missing = client.get("/Products", accept=None)  # requests sends */*
    assert missing.status_code == 400
    assert "Accept" in missing.json()["Description"]
    assert client.get("/Products", accept="application/xml").status_code == 406


# paging and filters -----------------------------------------------------------------------------
def test_paging_returns_every_record_exactly_once(env) -> None:
    app, client, _ = env
    seen: list[str] = []
    first = client.get("/Products", "pageSize=7").json()
    assert first["Pagination"] == {
        "NumberOfItems": 50,
        "PageSize": 7,
        "PageNumber": 1,
        "NumberOfPages": 8,
    }
    page = 1
    while True:
        body = client.get(f"/Products/{page}", "pageSize=7").json()
        seen += [item["Guid"] for item in body["Items"]]
        if page >= body["Pagination"]["NumberOfPages"]:
            break
        page += 1
    assert len(seen) == len(set(seen)) == 50 == len(app.world().products)
    codes = [item["ProductCode"] for item in client.items("/Products", "pageSize=1000")]
    assert codes == sorted(codes)  # default sort: ProductCode
    assert len(client.items("/Products", "pageSize=5000")) == 50  # clamped to 1000
    assert client.get("/Products").json()["Pagination"]["PageSize"] == 200  # default
    empty = client.get("/Products", "productCode=NOPE").json()
    assert empty == {
        "Pagination": {"NumberOfItems": 0, "PageSize": 200, "PageNumber": 0, "NumberOfPages": 0},
        "Items": [],
    }
    # path case does not matter (FL's /products)
    assert client.get("/products", "pageSize=1").status_code == 200


def test_a_change_between_pages_shows_on_the_next_page(env) -> None:
    # pages of one listing share a filtered, sorted view: a change made meanwhile must show
    app, client, _ = env
    by_code = sorted(app.world().products.values(), key=lambda p: p.code)
    client.get("/Products/1", "pageSize=20")
    by_code[25].code = "SKU-00000"  # sorts first now: page 2 starts one product later
    by_code[45].archived = True
    second = [i["ProductCode"] for i in client.items("/Products/2", "pageSize=20")]
    assert second == [p.code for p in by_code[19:40] if p is not by_code[25]]
    third = client.get("/Products/3", "pageSize=20").json()
    assert third["Pagination"]["NumberOfItems"] == 49
    assert by_code[45].code not in [i["ProductCode"] for i in third["Items"]]


def test_incremental_filter_returns_only_changed_records(env) -> None:
    app, client, clock = env
    clock.advance(hours=1)
    mark = clock.now()
    changed = app.catalogue.change_prices(app.tenant, 5)
    moved = app.catalogue.change_stock(app.tenant, 4, exclude={p.id for p in changed})
    got = client.items("/Products", f"modifiedSince={iso(mark)}")
    assert {i["Guid"] for i in got} == {p.id for p in changed}
    stock = client.items("/StockOnHand", f"modifiedSince={iso(mark)}")
    assert {i["ProductGuid"] for i in stock} == {p.id for p in moved}  # product untouched
    assert (
        client.items("/Products", f"modifiedSince={iso(clock.now() + timedelta(seconds=1))}") == []
    )
    assert client.get("/Products", "modifiedSince=yesterday").status_code == 400
    # customers too
    added = app.catalogue.add_customers(app.tenant, 2)
    got = client.items("/Customers", f"modifiedSince={iso(mark)}")
    assert {i["Guid"] for i in got} == {c.id for c in added}


def test_product_filters_prefix_obsolete_and_ids(env) -> None:
    app, client, _ = env
    for code in ("ABC", "ABC-1", "ABC-10"):
        assert (
            client.post(
                f"/Products/{uuid.uuid4()}", {"ProductCode": code, "ProductDescription": code}
            ).status_code
            == 201
        )
    assert [i["ProductCode"] for i in client.items("/Products", "productCode=ABC-1")] == [
        "ABC-1",
        "ABC-10",
    ]  # a prefix match, as the real one
    assert len(client.items("/Products", "productCode=abc")) == 3
    archived = app.catalogue.archive(app.tenant, 3)
    visible = {i["Guid"] for i in client.items("/Products", "pageSize=1000")}
    assert not visible & {p.id for p in archived}
    every = client.items("/Products", "pageSize=1000&includeObsolete=true")
    assert {i["Guid"] for i in every if i["Obsolete"]} == {p.id for p in archived}
    ids = [archived[0].id, next(iter(visible)), str(uuid.uuid4())]
    got = client.items("/Products", f"productId={','.join(ids)}&includeObsolete=true")
    assert {i["Guid"] for i in got} == set(ids[:2])
    single = client.get(f"/Products/{ids[1]}")
    assert single.status_code == 200 and "Pagination" not in single.json()
    assert single.json()["Guid"] == ids[1]
    missing = client.get(f"/Products/{ids[2]}")
    assert missing.status_code == 404 and "Description" in missing.json()


def test_stock_rows_absent_until_stock_moves_and_available_may_go_negative(env) -> None:
    app, client, _ = env
    world = app.world()
    unmoved_zero = {p.id for p in world.products.values() if p.stock == 0}
    rows = {i["ProductGuid"]: i for i in client.items("/StockOnHand", "pageSize=1000")}
    assert set(rows) == set(world.products) - unmoved_zero
    new = client.post(
        f"/Products/{uuid.uuid4()}", {"ProductCode": "NEW-1", "ProductDescription": "New"}
    ).json()
    assert new["Guid"] not in {
        i["ProductGuid"] for i in client.items("/StockOnHand", "pageSize=1000")
    }
    assert app.move_all_stock() == len(world.products)
    assert len(client.items("/StockOnHand", "pageSize=1000")) == len(world.products)
    # a Placed order allocates stock: AvailableQty = on hand - allocated, may be negative
    p = world.products[new["Guid"]]
    customer = next(iter(world.customers.values()))
    price = float(p.price)
    body = {
        "OrderNumber": "ALLOC-1",
        "OrderStatus": "Placed",
        "Customer": {"Guid": customer.id},
        "SalesOrderLines": [
            {
                "Product": {"Guid": p.id},
                "OrderQuantity": int(p.stock) + 5,
                "UnitPrice": price,
                "LineTaxCode": "NONE",
            }
        ],
    }
    assert client.post(f"/SalesOrders/{uuid.uuid4()}", body).status_code == 201
    row = client.items("/StockOnHand", f"productId={p.id}")[0]
    assert row["AllocatedQty"] == int(p.stock) + 5
    assert row["AvailableQty"] == -5
    assert (
        client.items("/StockOnHand", f"productId={p.id}&warehouseCode=W1")[0]["WarehouseCode"]
        == "W1"
    )


def test_dates_are_dotnet_and_the_offset_switch_shifts_them() -> None:
    with serve(products=2, customers=1, timestamp_offset_hours=13) as (app, client, clock):
        resp = client.get("/Products")
        assert '"LastModifiedOn":"\\/Date(' in resp.text  # .NET escapes the slashes
        p = sorted(app.world().products.values(), key=lambda p: p.code)[0]
        shown = parse_when(resp.json()["Items"][0]["LastModifiedOn"])
        assert p.updated_at - shown == timedelta(hours=13)
        # filters compare the real (stored) time
        assert len(client.items("/Products", f"modifiedSince={iso(p.updated_at)}")) == 2
    assert (
        dotnet_date(datetime(2014, 10, 20, 13, 49, 10, 817000, tzinfo=UTC), 13)
        == "/Date(1413766150817)/"
    )  # FL create_product.yml: posted ~13:49Z, shown 00:49Z


# limits -------------------------------------------------------------------------------------------
def test_monthly_quota_answers_429_then_serves_after_the_month_turns() -> None:
    clock = SimClock(datetime(2026, 1, 31, 23, 0, tzinfo=UTC))
    with serve(products=3, customers=1, clock=clock, limits={"per_month": 5}) as (app, client, _):
        for _ in range(5):
            assert client.get("/Warehouses").status_code == 200
        blocked = client.get("/Warehouses")
        assert blocked.status_code == 429
        assert blocked.json() == {"Description": QUOTA_DESCRIPTION}
        assert not any(h.lower().startswith("x-") for h in blocked.headers)  # none documented
        assert app.counters.throttled == 1 and app.calls_used() == 5
        clock.set(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))  # reset: the 1st at 00:00 UTC
        assert client.get("/Warehouses").status_code == 200
        assert app.calls_used() == 1


def test_quota_status_switch() -> None:
    with serve(products=1, customers=1, limits={"per_month": 1}, quota_status=403) as (
        _,
        client,
        _,
    ):
        assert client.get("/Warehouses").status_code == 200
        blocked = client.get("/Warehouses")
        assert blocked.status_code == 403 and blocked.json()["Description"] == QUOTA_DESCRIPTION


def test_optional_per_minute_limit_429_with_retry_after_then_service_again() -> None:
    with serve(products=1, customers=1, time_scale=120, limits={"per_minute": 3}) as (
        app,
        client,
        _,
    ):
        statuses = [client.get("/Warehouses").status_code for _ in range(4)]
        assert statuses[-1] == 429, statuses
        limited = client.get("/Warehouses")
        assert limited.status_code == 429 and "Retry-After" in limited.headers
        time.sleep(float(limited.headers["Retry-After"]) + 0.05)
        assert client.get("/Warehouses").status_code == 200
        assert app.counters.throttled >= 2


def test_per_minute_limit_is_off_by_default(env) -> None:
    _, client, _ = env
    assert all(client.get("/Warehouses").status_code == 200 for _ in range(30))


# writes -------------------------------------------------------------------------------------------
def test_lost_response_fault_leaves_the_order_created(env) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    app.faults.add("lost", method="POST", path="/SalesOrders", times=1)
    with pytest.raises(requests.ConnectionError):
        client.post(f"/SalesOrders/{guid}", order_body(app, guid))
    got = client.items("/SalesOrders", "orderNumber=WEB-1001")
    assert [o["Guid"] for o in got] == [guid]
    assert app.counters.creates["invoice"] == 1


def test_post_to_an_existing_sales_order_guid_updates_it(env) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    first = client.post(f"/SalesOrders/{guid}", order_body(app, guid))
    assert first.status_code == 201 and first.json()["OrderStatus"] == "Parked"
    again = client.post(f"/SalesOrders/{guid}", order_body(app, guid, qty=3))
    assert again.status_code == 201
    assert len(app.world().invoices) == 1
    assert app.counters.creates["invoice"] == 1 and app.counters.updates["invoice"] == 1
    assert again.json()["SalesOrderLines"][0]["OrderQuantity"] == 3
    assert again.json()["Total"] > first.json()["Total"]
    # the same OrderNumber under another Guid is refused
    other = str(uuid.uuid4())
    dup = client.post(f"/SalesOrders/{other}", order_body(app, other))
    assert dup.status_code == 400 and "already exists" in dup.json()["Description"]


def test_order_repost_switch_error() -> None:
    with serve(products=3, customers=2, order_repost="error") as (app, client, _):
        guid = str(uuid.uuid4())
        assert client.post(f"/SalesOrders/{guid}", order_body(app, guid)).status_code == 201
        again = client.post(f"/SalesOrders/{guid}", order_body(app, guid))
        assert again.status_code == 400 and len(app.world().invoices) == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda b: b["SalesOrderLines"][0].update(
                LineTotal=b["SalesOrderLines"][0]["LineTotal"] + 0.01
            ),
            "LineTotal",
        ),
        (
            lambda b: b["SalesOrderLines"][1].update(
                LineTax=b["SalesOrderLines"][1]["LineTax"] + 0.01
            ),
            "LineTax",
        ),
        (lambda b: b.update(Total=b["Total"] + 0.01), "Total"),
        (lambda b: b["SalesOrderLines"][0].update(LineTaxCode="GST"), "Tax code 'GST'"),
        (lambda b: b["SalesOrderLines"][0].update(Product={"Guid": str(uuid.uuid4())}), "Product"),
        (lambda b: b["SalesOrderLines"][1].update(Product={"ProductCode": "NOPE"}), "NOPE"),
        (lambda b: b.update(Customer={"Guid": str(uuid.uuid4())}), "Customer"),
        (lambda b: b.update(Customer={"CustomerCode": "NOBODY"}), "NOBODY"),
    ],
)
def test_sales_order_validation_errors(env, change, fragment) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    body = order_body(app, guid)
    change(body)
    resp = client.post(f"/SalesOrders/{guid}", body)
    assert resp.status_code == 400
    assert fragment in resp.json()["Description"]
    assert not app.world().invoices


def test_tax_codes_and_omitted_totals(env) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    body = order_body(app, guid)
    for line in body["SalesOrderLines"]:
        line["LineTaxCode"] = "none"  # FL sent "None": matched case-insensitively
        del line["LineTax"]
    for key in ("SubTotal", "TaxTotal", "Total"):
        del body[key]
    resp = client.post(f"/SalesOrders/{guid}", body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["TaxTotal"] == 0 and resp.json()["Total"] == resp.json()["SubTotal"]


def test_order_number_overrides_other_filters_and_complete(env) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    client.post(f"/SalesOrders/{guid}", order_body(app, guid, number="WEB-7"))
    assert client.items("/SalesOrders", "customerCode=NOBODY") == []
    assert [
        o["Guid"] for o in client.items("/SalesOrders", "orderNumber=WEB-7&customerCode=NOBODY")
    ] == [guid]
    product = app.world().products[order_body(app, guid)["SalesOrderLines"][0]["Product"]["Guid"]]
    before = product.stock
    failed = client.post(f"/SalesOrders/{guid}/Complete", None)  # the first call fails
    assert failed.status_code == 500 and product.stock == before
    done = client.post(f"/SalesOrders/{guid}/Complete", None)  # completes, answers nothing
    assert done.status_code == 200 and done.content == b""
    assert product.stock == before - 2
    again = client.post(f"/SalesOrders/{guid}/Complete", None)  # harmless
    assert again.status_code == 200 and again.json()["OrderStatus"] == "Completed"
    assert product.stock == before - 2
    changed = client.post(f"/SalesOrders/{guid}", order_body(app, guid, number="WEB-7"))
    assert changed.status_code == 400 and "completed" in changed.json()["Description"]


def test_customer_post_creates_updates_and_keeps_codes_unique(env) -> None:
    app, client, _ = env
    guid = str(uuid.uuid4())
    body = {
        "Guid": guid,
        "CustomerCode": "test@t.com",
        "CustomerName": "test",
        "Email": "test@t.com",
    }
    created = client.post(f"/Customers/{guid}", body)
    assert created.status_code == 201 and created.json()["Email"] == "test@t.com"
    # FL create_customer.yml: POSTing to an existing Guid updates it (201), counted as an update
    updated = client.post(
        f"/Customers/{guid}", {"CustomerCode": "test@t.com", "CustomerName": "test 2"}
    )
    assert updated.status_code == 201
    assert updated.json()["CustomerName"] == "test 2"
    assert updated.json()["Email"] is None  # no partial updates: left out means blanked
    assert app.counters.creates["customer"] == 1 and app.counters.updates["customer"] == 1
    other = str(uuid.uuid4())
    dup = client.post(f"/Customers/{other}", {"CustomerCode": "TEST@T.COM", "CustomerName": "x"})
    assert dup.status_code == 400 and "already exists" in dup.json()["Description"]
    mismatch = client.post(f"/Customers/{other}", {**body, "CustomerCode": "Z"})
    assert mismatch.status_code == 400  # Guid in body differs from the URL
    assert [c["Guid"] for c in client.items("/Customers", "contactEmail=TEST@t")] == []
    assert [c["Guid"] for c in client.items("/Customers", "customerCode=test@")] == [guid]


def test_create_factory_and_second_account() -> None:
    app = create(products=2, customers=1, seed=3)
    assert isinstance(app, UnleashedSandbox)
    creds = app.add_account("second", products=4)
    assert creds["api_id"] != app.credentials()["api_id"]
    assert len(app.world("second").products) == 4


def test_max_query_length_switch_answers_like_iis_request_filtering() -> None:
    with serve(products=1, customers=1, max_query_length=40) as (_, client, _):
        assert client.get("/Products", "productCode=SKU").status_code == 200
        long = client.get("/Products", "productId=" + ",".join(str(uuid.uuid4()) for _ in range(2)))
        assert long.status_code == 404
