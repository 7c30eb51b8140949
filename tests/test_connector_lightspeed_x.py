"""The Lightspeed X-Series connector against its simulator, and every request it sends checked
against the official spec."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
from lightspeed_x_helpers import (
    START,
    SpecRequest,
    make_app,
    make_connector,
    serve,
    validate_request,
)
from openapi_core.exceptions import OpenAPIError

from synccli.connectors.base import InvoiceDraft, InvoiceLine, NewCustomer, NewProduct
from synccli.connectors.lightspeed_x import (
    authorize_url,
    exchange_code,
    sale_id,
    stamp_version,
    version_stamp,
)
from synccli.errors import Rejected, TransientError


def draft(app, number, customer="", total=None, tax_code="GST", resend=False):
    product = sorted(app.world().products.values(), key=lambda p: p.code)[0]
    lines = [
        InvoiceLine(
            product.id,
            product.code,
            "mug",
            Decimal(2),
            Decimal("10.00"),
            tax_code,
            tax_rate=Decimal("0.15") if tax_code else Decimal(0),
        ),
        InvoiceLine(product.id, product.code, "mug", Decimal(3), Decimal("3.33")),
    ]
    computed = Decimal("32.99") if tax_code else Decimal("29.99")
    return InvoiceDraft(
        number,
        app.clock.now(),
        "NZD",
        customer,
        lines,
        total=computed if total is None else total,
        resend=resend,
    )


def test_version_travels_as_an_instant_and_back():
    assert stamp_version(version_stamp(3_000_123)) == 3_000_123
    assert stamp_version(None) == 0
    assert version_stamp(10**12).year < 2000  # always before any run's start


def test_products_and_stock_by_their_own_cursors():
    app = make_app(products=25, customers=0)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        pages = list(conn.changed_products(None))
        assert sum(len(p.records) for p in pages) == 25 and len(pages) == 1
        stock = list(conn.changed_stock(None))
        assert sum(len(p.records) for p in stock) == 25  # the configured outlet's rows only
        cursor, stock_cursor = pages[-1].cursor, stock[-1].cursor
        changed = app.catalogue.change_prices(app.tenant, 3)
        moved = app.catalogue.change_stock(app.tenant, 4, exclude={p.id for p in changed})
        again = [r for p in conn.changed_products(cursor) for r in p.records]
        assert {r.remote_id for r in again} == {p.id for p in changed}  # stock moves no product
        st = [r for p in conn.changed_stock(stock_cursor) for r in p.records]
        assert {r.remote_id: r.quantity for r in st} == {p.id: p.stock for p in moved}
        gone = changed[0].id
        app.delete_product(gone)
        ghosts = [
            r
            for p in conn.changed_products(pages[-1].cursor)
            for r in p.records
            if r.remote_id == gone
        ]
        assert ghosts and not ghosts[-1].active
        assert conn.get_products([gone]) == []
        calls = conn.http.calls
        assert [p.remote_id for p in conn.get_products([changed[1].id])] == [changed[1].id]
        assert conn.http.calls - calls == 2


def test_an_archived_product_is_seen_inactive_by_a_full_scan():
    app = make_app(products=6, customers=0)  # archiving moves no version (switch default)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        cursor = list(conn.changed_products(None))[-1].cursor
        archived = app.catalogue.archive(app.tenant, 2)
        assert [r for p in conn.changed_products(cursor) for r in p.records] == []
        scan = {r.remote_id: r.active for p in conn.changed_products(None) for r in p.records}
        assert all(scan[p.id] is False for p in archived)
        assert conn.get_products([archived[0].id])[0].active is False


def test_find_and_create_product_by_exact_sku():
    app = make_app(products=5, customers=0)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        assert conn.find_product("SKU-00002").code == "SKU-00002"
        assert conn.find_product("sku-00002") is None  # exact, case-sensitive
        made = conn.create_product(NewProduct("NEW-1", "New mug", Decimal("9.50")))
        assert conn.find_product("NEW-1").remote_id == made.remote_id


def test_customers_found_by_email_or_code_and_created():
    app = make_app(products=1, customers=6)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        c = sorted(app.world().customers.values(), key=lambda c: c.account_number)[0]
        assert [x.remote_id for x in conn.find_customers(email=c.email.upper())] == [c.id]
        assert [x.remote_id for x in conn.find_customers(account=c.account_number)] == [c.id]
        assert conn.find_customers(account=c.account_number[:-1]) == []  # the search's substring
        made = conn.create_customer(
            NewCustomer("Ann Lee", email="ann@x.example", account_number="ANN-1")
        )
        assert (made.name, made.account_number) == ("Ann Lee", "ANN-1")
        assert any(
            r.remote_id == made.remote_id for p in conn.changed_customers(None) for r in p.records
        )
        with pytest.raises(Rejected):
            conn.create_customer(NewCustomer("Ann Two", account_number="ANN-1"))


def test_a_sale_is_posted_once_under_our_id_even_after_a_lost_answer():
    app = make_app(products=3, customers=1)
    app.faults.add("lost", method="POST", path="/sales$", times=1)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        inv = draft(app, "INV-7")
        assert conn.find_invoice("INV-7") is None  # GET /sales/{id}: 404
        with pytest.raises(TransientError):
            conn.post_invoice(inv, "synccli:shop:INV-7")
        found = conn.find_invoice("INV-7")  # the job looks up first: there it is
        assert found.remote_id == sale_id(app.domain_prefix, "INV-7") and found.total == Decimal(
            "32.99"
        )
        assert conn.finish_found(found) is found
        assert app.counters.total("POST", "POST sales") == 1
        posted = conn.post_invoice(draft(app, "INV-8", total=Decimal("29.99"), tax_code=None), "k8")
        assert posted.total == Decimal("29.99") and posted.status == "closed"


def test_a_sale_the_store_refuses_is_rejected_with_its_reason():
    app = make_app(products=2, customers=0)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        with pytest.raises(Rejected, match="unknown tax"):
            conn.post_invoice(draft(app, "INV-10", tax_code="BADTAX"), "k10")
        # a shop total the store reckons otherwise is paid as the store reckons it: the sale's
        # own total comes back, and the job reports the mismatch (never a refused payment)
        posted = conn.post_invoice(draft(app, "INV-9", total=Decimal("40.00")), "k9")
        assert posted.total == Decimal("32.99")


def test_reference_lists_are_kept_and_primed():
    app = make_app(products=1, customers=0)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        ref = conn.reference()
        assert ref["register_id"] == app.register_id and ref["user_id"] == app.user_id
        kept = conn.reference_lists()
        other, _ = make_connector(app, server)
        ((name, value),) = kept.items()
        other.prime(name, value)
        calls = other.http.calls
        other.post_invoice(draft(app, "INV-11"), "k11")
        assert other.http.calls - calls == 1  # the day's lists came from the store
        assert set(conn.ids()) == {
            "outlet_id",
            "register_id",
            "payment_type_id",
            "no_tax_id",
            "user_id",
        }


def test_personal_token_and_oauth_refresh():
    app = make_app(products=2, customers=0, token_ttl=3600)
    with serve(app) as server:
        conn, _ = make_connector(app, server, personal=True)
        assert conn.ping()["store"] == "sandboxstore"
        oauth, store = make_connector(app, server)
        app.clock.advance(4000)  # the access token expired at the simulator: 401, refresh, retry
        assert oauth.ping()["status"] == 200 and oauth.http.auth.refreshes == 1
        assert store.tokens.refresh_token != app.credentials()["refresh_token"]


def test_authorize_url_and_code_exchange_use_the_callback_s_store():
    url = authorize_url({"client_id": "cid"}, "http://localhost:1/cb", "st")
    assert (
        url.startswith("https://secure.retail.lightspeed.app/connect?") and "scope=products" in url
    )
    app = make_app(products=1, customers=0)
    with serve(app) as server:
        q = {
            "response_type": "code",
            "client_id": "synccli-x-sandbox-client",
            "redirect_uri": "http://localhost:1/cb",
            "state": "st",
            "scope": "products:read",
        }
        loc = requests.get(f"{server.url}/connect", params=q, allow_redirects=False, timeout=10)
        from urllib.parse import parse_qsl, urlsplit

        back = dict(parse_qsl(urlsplit(loc.headers["Location"]).query))
        tokens = exchange_code(
            {"client_id": "synccli-x-sandbox-client", "base_url": server.url},
            {"client_secret": app.clients["synccli-x-sandbox-client"]},
            back["code"],
            "http://localhost:1/cb",
            callback=back,
        )
        assert tokens.extra["domain_prefix"] == "sandboxstore" and tokens.refresh_token


def test_the_pacer_keeps_within_the_window_and_a_429_date_is_honoured():
    app = make_app(products=2, customers=0, limits={"window": 5}, time_scale=300)
    with serve(app) as server:
        conn, _ = make_connector(app, server, pace=False, time_scale=300)
        for _ in range(7):
            conn.ping()
        assert app.counters.throttled >= 1  # no pacing: pushed back, Retry-After waited out
        app.counters.reset()
        paced, _ = make_connector(app, server, pace=True, time_scale=300, personal=True)
        for _ in range(12):
            paced.ping()
        assert app.counters.throttled == 0


def test_every_request_the_connector_sends_validates_against_the_openapi_spec():
    app = make_app(products=6, customers=4)
    with serve(app) as server:
        conn, _ = make_connector(app, server)
        sent: list[requests.PreparedRequest] = []
        conn.http.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request))
        c = next(iter(app.world().customers.values()))
        p = next(iter(app.world().products.values()))
        list(conn.changed_products(None))
        list(conn.changed_stock(version_stamp(5)))
        list(conn.changed_customers(None))
        conn.get_products([p.id])
        conn.find_product("Odd code & + % ü")
        conn.find_customers(email=c.email, account=c.account_number)
        made = conn.create_product(
            NewProduct("SPEC-1", "Spec mug", Decimal("4.5"), description="d")
        )
        cust = conn.create_customer(
            NewCustomer("Spec Buyer", email="sb@example.com", account_number="SB-1")
        )
        conn.find_invoice("SPEC-INV-1")
        conn.post_invoice(draft(app, "SPEC-INV-1", customer=cust.remote_id), "k")
        conn.ping()
        conn.ids()
        assert made.remote_id
    for prepared in sent:
        validate_request(SpecRequest.sent(prepared))
    assert len(sent) >= 20
    bad = requests.Request("POST", "http://x/api/2026-07/sales", json={"state": "nope"}).prepare()
    with pytest.raises(OpenAPIError):
        validate_request(SpecRequest.sent(bad))


def test_the_five_minute_window_is_kept_in_the_ledger_across_runs(store):
    """A run that spent the window leaves the provider's count in the ledger: the next run's
    pacer (another process, maybe another host) starts from it and waits for the window."""
    import time

    from synccli.clock import SimClock
    from synccli.connectors.http import CallRecord, HttpClient
    from synccli.connectors.lightspeed_x import limits_for
    from synccli.store.connections import add_connection
    from synccli.store.ledger import StoreLedger

    conn = add_connection(
        store, "xs", "lightspeed-x", {"domain_prefix": "s"}, {"client_secret": "x"}
    )
    limits = limits_for(1)
    assert (limits.window_calls, limits.window_seconds) == (350, 300.0)
    clock = SimClock(START)
    first = StoreLedger(store, conn.id, limits)
    first.record(CallRecord(START, "GET", "/p", 200, 5, 1.0, {"window": 0.0}))
    later = HttpClient(
        "http://x",
        limits=limits,
        ledger=StoreLedger(store, conn.id, limits),
        clock=clock,
        time_scale=100,
    )
    assert later.pacer is not None and 2.9 < later.pacer.delay(time.monotonic()) <= 3.01
    clock.advance(301)  # that window is over: nothing to wait for
    fresh = HttpClient(
        "http://x",
        limits=limits,
        ledger=StoreLedger(store, conn.id, limits),
        clock=clock,
        time_scale=100,
    )
    assert fresh.pacer is not None and fresh.pacer.delay(time.monotonic()) == 0


def test_a_connection_with_a_personal_token_needs_no_authorisation(store, cli, monkeypatch):
    from synccli.sandbox import harness
    from synccli.store.connections import get_connection
    from synccli.sync.context import job_run
    from synccli.sync.products import pull_products

    with harness.start("lightspeed-x", products=4, customers=0) as running:
        monkeypatch.setenv("SYNC_CLIENT_SECRET", running.app.personal_token())
        args = ["--provider", "lightspeed-x", "--base-url", running.url, "--set"]
        added = cli(
            "connections",
            "add",
            "px",
            *args,
            "domain_prefix=sandboxstore",
            "--set",
            "grant=personal_token",
        )
        assert added.exit_code == 0, added.stderr
        assert "connections test px" in added.stdout  # no browser consent to ask for
        refused = cli("connections", "authorize", "px")
        assert refused.exit_code == 2 and "personal token" in refused.stderr
        with job_run(store, "pull-products", get_connection(store, "px")) as jc:
            assert pull_products(jc).new == 4


def test_operator_commands_cover_it(store, cli):
    """doctor, status, plan, trace and connections ids on an X-Series connection."""
    import json

    from synccli.sandbox import harness
    from synccli.sync.orders import add_orders

    with harness.start("lightspeed-x", products=6, customers=2) as running:
        conn = harness.add_connection(store, "xs", running)
        p = sorted(running.app.world().products.values(), key=lambda x: x.code)[0]
        assert cli("pull-products", "-c", "xs").exit_code == 0
        order = {"number": "XS-1", "date": "2026-01-05", "currency": "NZD",
                 "customer": {"email": "x@shop.example", "name": "Xe Buyer"},
                 "lines": [{"sku": p.code, "description": "mug", "quantity": 1,
                            "unit_price": "10.00", "tax_code": "GST", "tax_rate": "0.15"}],
                 "total": "11.50"}  # fmt: skip
        add_orders(store, conn, json.dumps(order) + "\n")
        posted = cli("post-invoices", "-c", "xs")
        assert posted.exit_code == 0, posted.stderr
        doctor = cli("doctor")
        assert "xs: credentials" in doctor.stdout and "Sandbox Retail X" in doctor.stdout
        status = cli("status", "--json")
        assert json.loads(status.stdout)[0]["invoices"]["posted"] == 1
        plan = cli("plan", "--products", "5000", "--customers", "3000", "--orders-per-day", "50",
                   "--provider", "lightspeed-x")  # fmt: skip
        assert plan.exit_code == 0 and "lightspeed-x" in plan.stdout
        assert "XS-1" in cli("trace", "invoice", "XS-1", "-c", "xs").stdout
        assert p.code in cli("trace", "product", p.code, "-c", "xs").stdout
        ids = json.loads(cli("connections", "ids", "xs", "--json").stdout)
        assert running.app.register_id in json.dumps(ids)


def test_cursors_show_as_versions_not_1970(store, cli):
    """X-Series cursors are version counters kept in the store's time columns: every command
    that shows one shows the version, never the instant it is kept as (a 1970 date)."""
    import json
    import re

    from synccli.sandbox import harness
    from synccli.store.sync_state import get_cursor

    epoch = re.compile(r"1970-01-01|1970-01-0\d \d\d:\d\d")
    with harness.start("lightspeed-x", products=6, customers=2) as running:
        conn = harness.add_connection(store, "xs", running)
        code = sorted(running.app.world().products.values(), key=lambda x: x.code)[0].code
        pulled = cli("pull-products", "-c", "xs", "--json")
        assert pulled.exit_code == 0, pulled.stderr
        with store.session() as s:
            versions = {
                stream: stamp_version(get_cursor(s, conn.id, stream).value)
                for stream in ("products", "stock")
            }
        assert all(v > 0 for v in versions.values())
        report = json.loads(pulled.stdout)[0]["report"]
        assert report["cursor"] == {k: {"version": v} for k, v in versions.items()}
        shown = cli("status")
        assert not epoch.search(shown.stdout), shown.stdout
        assert f"products version {versions['products']}" in shown.stdout
        assert f"stock version {versions['stock']}" in shown.stdout
        as_json = cli("status", "--json").stdout
        assert not epoch.search(as_json), as_json
        item = json.loads(as_json)[0]
        assert item["cursors"] == {
            "products": {"version": versions["products"]},
            "stock": {"version": versions["stock"]},
            "customers": None,
        }
        linked = cli("link-customers", "-c", "xs", "--json")
        assert linked.exit_code == 0, linked.stderr
        assert list(json.loads(linked.stdout)[0]["report"]["cursor"]) == ["version"]
        assert "customers version " in cli("status").stdout
        for args in (("trace", "product", code, "-c", "xs"), ("doctor",)):
            for extra in ((), ("--json",)) if args[0] == "trace" else ((),):
                out = cli(*args, *extra).stdout
                assert not epoch.search(out), (args, out)
        traced = json.loads(cli("trace", "product", code, "-c", "xs", "--json").stdout)
        assert traced["links"][0]["remote_version"] > 0


def test_a_pull_reuses_the_lists_an_earlier_run_kept(store, cli, monkeypatch):
    """A personal-token connection names no outlet: the first run reads the store's lists, and
    every later job of the day takes them from the store, as post-invoices always did (each pull
    read them again: 7 calls a quiet pull instead of 2)."""
    from synccli.sandbox import harness
    from synccli.store.connections import get_connection
    from synccli.sync.context import job_run
    from synccli.sync.products import pull_products

    with harness.start("lightspeed-x", products=4, customers=0) as running:
        monkeypatch.setenv("SYNC_CLIENT_SECRET", running.app.personal_token())
        args = ["--provider", "lightspeed-x", "--base-url", running.url, "--set"]
        added = cli(
            "connections",
            "add",
            "px",
            *args,
            "domain_prefix=sandboxstore",
            "--set",
            "grant=personal_token",
        )
        assert added.exit_code == 0, added.stderr
        conn = get_connection(store, "px")
        with job_run(store, "pull-products", conn) as jc:
            assert pull_products(jc).new == 4
        with job_run(store, "pull-products", conn) as jc:
            pull_products(jc)
            quiet = jc.calls
        assert quiet == 2  # the product feed and the stock feed, nothing more
