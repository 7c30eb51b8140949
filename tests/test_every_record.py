"""Every real record is synced (issue 17, lines 7-11 and the simulators' part of line 18).

Each test runs a connector against its provider's simulator over real HTTP, with the simulator as
strict as the provider by default: customers reached through a second contact, look-ups whose
case differs, customers Lightspeed archived, items without the code a shop keeps, signatures over
values that need encoding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from synccli import registry
from synccli.clock import SimClock
from synccli.connectors.base import InvoiceDraft, InvoiceLine
from synccli.sandbox import harness
from synccli.sandbox.data import Customer as SandboxCustomer
from synccli.store.db import Store
from synccli.store.models import Connection, Customer, Order
from synccli.sync import customers
from synccli.sync.context import job_run

CLOCK = SimClock()
SCALE = {**dict.fromkeys(registry.names(), 1.0), "lightspeed": 200.0}


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


def start(provider: str, n_customers: int = 8, n_products: int = 3, **kw) -> harness.Running:
    return harness.start(
        provider,
        products=n_products,
        customers=n_customers,
        clock=CLOCK,
        time_scale=SCALE[provider],
        **kw,
    )


def connect(store: Store, running: harness.Running, **settings) -> Connection:
    return harness.add_connection(
        store, "shop", running, time_scale=SCALE[running.provider], **settings
    )


def world_customers(running: harness.Running) -> list[SandboxCustomer]:
    app = running.app
    return sorted(app.catalogue.tenant(app.tenant).customers.values(), key=lambda c: c.seq)


def add_order(store: Store, conn: Connection, number: str, **kw) -> Order:
    with store.session() as s:
        order = Order(
            connection_id=conn.id,
            number=number,
            date=CLOCK.now(),
            currency=kw.pop("currency", "NZD"),
            customer_email=kw.pop("email", None),
            customer_account=kw.pop("account", None),
            customer_name=kw.pop("name", None),
            total=Decimal("11.50"),
            created_at=CLOCK.now(),
        )
        s.add(order)
    return order


def ensure(store: Store, conn: Connection, order: Order) -> str:
    """The remote customer post-invoices would use for ``order``."""
    with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
        return customers.ensure_customer(jc, order)


def customer_creates(app) -> int:
    return app.counters.creates["customer"]


def count(store: Store, model, *where) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


# --- line 9: Unleashed customers reached through any of their contacts ---------------------------
def test_unleashed_order_by_a_second_contacts_email_finds_that_customer_and_creates_none(
    store: Store,
) -> None:
    with start("unleashed") as running:
        app = running.app
        conn = connect(store, running)
        target = world_customers(running)[1]
        app.add_contact(target.id, "Orders@Acme-Buyer.test", "Olive", "Orders")
        # a customer whose primary email the look-up's prefix also reaches, not ours
        other = world_customers(running)[2]
        other.email = "orders@acme-buyer.test.au"
        order = add_order(store, conn, "U-1", email=" orders@acme-buyer.TEST ", name="Olive")
        app.counters.reset()

        assert ensure(store, conn, order) == target.id
        assert customer_creates(app) == 0
        # the second order of that customer is linked already: no look-up, no create
        again = add_order(store, conn, "U-2", email="orders@acme-buyer.test", name="Olive")
        assert ensure(store, conn, again) == target.id
        assert customer_creates(app) == 0


def test_unleashed_simulator_contact_email_filter_matches_every_contact_by_default() -> None:
    with start("unleashed") as running:
        app = running.app
        seeded = [c for c in world_customers(running) if app.contacts.get(c.id)]
        assert seeded, "some customers have a second contact by default"
        from synccli.connectors import unleashed

        conn = unleashed.UnleashedConnector(
            harness_http(running), {"api_id": app.credentials()["api_id"]}
        )
        contact = app.contacts[seeded[0].id][0]["EmailAddress"]
        found = conn.find_customers(email=contact.upper())
        assert [c.remote_id for c in found] == [seeded[0].id]


def harness_http(running: harness.Running):
    from synccli.connectors import unleashed

    creds = running.app.credentials()
    conn = unleashed.connect(
        {"base_url": running.url, "api_id": creds["api_id"]}, {"api_key": creds["api_key"]}
    )
    return conn.http


# --- line 11: Xero look-ups whatever the case, ContactNumber, currency codes ----------------------
def test_xero_email_lookup_finds_a_contact_whatever_the_case_in_one_call(store: Store) -> None:
    with start("xero") as running:
        app = running.app
        conn = connect(store, running)
        target = world_customers(running)[1]
        target.email = "Jane.Mixed@Example.COM"
        order = add_order(store, conn, "X-1", email="jane.mixed@example.com", name="Jane")
        app.counters.reset()
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            found = jc.connector.find_customers(email="JANE.MIXED@example.com")
            assert jc.calls == 1
        assert [c.remote_id for c in found] == [target.id]
        assert ensure(store, conn, order) == target.id
        assert customer_creates(app) == 0


def test_xero_simulator_where_equals_is_case_sensitive_and_accepts_tolower() -> None:
    import requests

    with start("xero") as running:
        app = running.app
        target = world_customers(running)[1]
        target.email = "Jane.Mixed@Example.COM"
        headers = xero_headers(running)
        url = f"{running.url}/api.xro/2.0/Contacts"

        def names(where: str) -> list[str]:
            resp = requests.get(url, params={"where": where}, headers=headers, timeout=10)
            assert resp.status_code == 200, resp.text
            return [c["ContactID"] for c in resp.json()["Contacts"]]

        assert names('EmailAddress=="jane.mixed@example.com"') == []
        assert names('EmailAddress=="Jane.Mixed@Example.COM"') == [target.id]
        assert names('EmailAddress.ToLower()=="jane.mixed@example.com"') == [target.id]
        assert app is running.app


def xero_headers(running: harness.Running) -> dict[str, str]:
    creds = running.app.credentials()
    return {
        "Authorization": f"Bearer {creds['access_token']}",
        "xero-tenant-id": creds["tenant_id"],
        "Accept": "application/json",
    }


def test_xero_links_by_contact_number_and_a_contact_created_at_sale_gets_one(
    store: Store,
) -> None:
    with start("xero") as running:
        app = running.app
        conn = connect(store, running)
        target = world_customers(running)[2]
        target.account_number = None  # only the API-set ContactNumber names it
        target.code = "SHOP-2042"
        order = add_order(store, conn, "X-2", account="SHOP-2042", name="Someone")
        app.counters.reset()
        assert ensure(store, conn, order) == target.id
        assert customer_creates(app) == 0

        new = add_order(
            store, conn, "X-3", account="SHOP-9001", email="new@buyer.test", name="New Buyer"
        )
        rid = ensure(store, conn, new)
        assert customer_creates(app) == 1
        made = app.catalogue.tenant(app.tenant).customers[rid]
        assert made.code == "SHOP-9001"  # ContactNumber: set by the API only
        # an edit in Xero's screens empties the AccountNumber: the contact is still found
        made.account_number = None
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            found = jc.connector.find_customers(account="SHOP-9001")
        assert [c.remote_id for c in found] == [rid]


def test_xero_lower_case_currency_is_sent_upper_case(store: Store) -> None:
    with start("xero", n_products=2) as running:
        app = running.app
        conn = connect(store, running)
        product = sorted(app.catalogue.tenant(app.tenant).products.values(), key=lambda p: p.seq)[0]
        customer = world_customers(running)[0]
        draft = InvoiceDraft(
            number="X-CUR-1",
            date=CLOCK.now(),
            currency="nzd",
            customer_remote_id=customer.id,
            lines=[
                InvoiceLine(
                    product_remote_id=product.id,
                    code=product.code,
                    description=product.name,
                    quantity=Decimal(1),
                    unit_price=Decimal("10.00"),
                )
            ],
        )
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            posted = jc.connector.post_invoice(draft, "key-cur-1")
        assert posted.number == "X-CUR-1"
        sent = app.counters.requests[-1]["body"]
        assert sent["CurrencyCode"] == "NZD"


def test_xero_simulator_refuses_a_lower_case_currency_code() -> None:
    import requests

    with start("xero", n_products=2) as running:
        app = running.app
        product = sorted(app.catalogue.tenant(app.tenant).products.values(), key=lambda p: p.seq)[0]
        customer = world_customers(running)[0]
        body = {
            "Invoices": [
                {
                    "Type": "ACCREC",
                    "Contact": {"ContactID": customer.id},
                    "InvoiceNumber": "X-CUR-2",
                    "CurrencyCode": "nzd",
                    "Status": "AUTHORISED",
                    "LineItems": [
                        {
                            "ItemCode": product.code,
                            "Description": "x",
                            "Quantity": 1,
                            "UnitAmount": 10,
                            "AccountCode": "200",
                            "TaxType": "NONE",
                        }
                    ],
                }
            ]
        }
        resp = requests.put(
            f"{running.url}/api.xro/2.0/Invoices",
            json=body,
            headers=xero_headers(running),
            timeout=10,
        )
        assert resp.status_code == 400
        assert "nzd" in resp.text


# --- line 8: Lightspeed archived customers, pages in the older offset form -----------------------
def link_run(store: Store, conn: Connection) -> customers.LinkReport:
    with job_run(store, customers.JOB, conn, clock=CLOCK) as jc:
        report = customers.link_customers(jc)
        jc.counts = report
    return report


def test_lightspeed_archived_customers_are_read_and_kept_inactive(store: Store) -> None:
    with start("lightspeed", n_customers=6) as running:
        conn = connect(store, running)
        gone = world_customers(running)[2]
        gone.archived = True
        report = link_run(store, conn)
        assert report.seen == 6 and report.inactive == 1
        with store.session() as s:
            seen = customers.load_seen(s, conn.id)
        assert seen[str(gone.seq)]["active"] is False
        assert sum(1 for d in seen.values() if d["active"]) == 5


def test_lightspeed_order_of_an_archived_customer_creates_no_duplicate(store: Store) -> None:
    from synccli.errors import Rejected

    with start("lightspeed", n_customers=6) as running:
        app = running.app
        conn = connect(store, running)
        gone = world_customers(running)[3]
        gone.archived = True
        order = add_order(store, conn, "L-1", email=gone.email.upper(), name=gone.name)
        app.counters.reset()
        with pytest.raises(Rejected, match="archived"):
            ensure(store, conn, order)
        assert customer_creates(app) == 0


@pytest.mark.parametrize("paging", ["cursor", "offset"])
def test_lightspeed_customers_paged_by_offset_are_all_read(store: Store, paging: str) -> None:
    with start("lightspeed", n_customers=230, paging=paging) as running:
        conn = connect(store, running)
        report = link_run(store, conn)
        assert report.seen == 230 and report.pages == 3
        assert not report.errors


def test_lightspeed_offset_answer_that_ignores_the_offset_fails_loudly(store: Store) -> None:
    from synccli.errors import BadResponse

    with start("lightspeed", n_customers=230, paging="offset_ignored") as running:
        conn = connect(store, running)
        with pytest.raises(BadResponse, match="offset"):
            link_run(store, conn)


# --- line 10: Unleashed signs exactly what it sends; the accepted form is kept --------------------
HARD_CODES = ["MUG BLUE 1", "A+B", "R&D-1", "50%OFF", "CRÈME-ÉTÉ", "日本-1", "a b+c&d%e"]


@pytest.mark.parametrize("form", ["raw", "decoded"])
def test_unleashed_signs_values_needing_encoding_and_keeps_the_form_the_account_accepts(
    store: Store, form: str
) -> None:
    with start("unleashed", n_products=len(HARD_CODES), signature_form=form) as running:
        app = running.app
        conn = connect(store, running)
        products = sorted(app.catalogue.tenant(app.tenant).products.values(), key=lambda p: p.seq)
        for p, code in zip(products, HARD_CODES, strict=True):
            p.code = code
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            for p in products:
                found = jc.connector.find_product(p.code)
                assert found is not None and found.remote_id == p.id, p.code
        # a decoded-checking account costs one refused call, once
        assert app.bad_signatures == (1 if form == "decoded" else 0)
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:  # a later run
            for p in products:
                assert jc.connector.find_product(p.code).remote_id == p.id
            by_email = jc.connector.find_customers(email="nobody+tag@x y.test")
        assert by_email == []
        assert app.bad_signatures == (1 if form == "decoded" else 0)


def test_unleashed_a_wrong_key_is_refused_both_ways_and_nothing_is_kept(store: Store) -> None:
    from synccli.errors import AuthError
    from synccli.store.connections import StoreTokenStore

    with start("unleashed", signature_form="raw") as running:
        app = running.app
        conn = connect(store, running)
        acct = next(iter(app.accounts.values()))
        acct.api_key = "another-key"
        with (
            pytest.raises(AuthError),
            job_run(store, "post-invoices", conn, clock=CLOCK) as jc,
        ):
            jc.connector.find_product("A+B")
        assert app.bad_signatures == 2  # the form it was sent in, then the other one
        assert "signature_form" not in StoreTokenStore(store, conn.id).load().extra


# --- line 7: Lightspeed items with no customSku; the field that holds the shop's SKU ------------
def pull(store: Store, conn: Connection):
    from synccli.sync import products

    with job_run(store, "pull-products", conn, clock=CLOCK) as jc:
        report = products.pull_products(jc)
        jc.counts = report
    return report


def local_skus(store: Store, conn: Connection) -> set[str]:
    from synccli.store.models import Product

    with store.session() as s:
        return set(s.scalars(select(Product.sku).where(Product.connection_id == conn.id)))


def test_lightspeed_items_without_custom_sku_are_counted_not_errors_and_shown_by_status(
    store: Store, cli
) -> None:
    from synccli.sync.status import status_report

    with start("lightspeed", n_products=30) as running:
        app = running.app
        conn = connect(store, running)
        items = [p for p, _ in app.items()]
        uncoded = [p for p in items if not p.code]
        assert len(items) == 35 and len(uncoded) == 5  # the simulator's default: 1 in 6
        first = pull(store, conn)
        assert first.errors == []
        assert (first.seen, first.new, first.uncoded) == (35, 30, 5)
        assert local_skus(store, conn) == {p.code for p in items if p.code}
        CLOCK.advance(60)
        uncoded[0].price += 1  # a change at the provider: read again, still not an error
        uncoded[0].updated_at = CLOCK.now()
        again = pull(store, conn)
        assert again.errors == [] and again.uncoded == 1
        (item,) = status_report(store, CLOCK.now(), ["shop"])
        assert item.uncoded == 5
        shown = cli("status")
        assert shown.exit_code == 0, shown.stderr
        assert "5 products at lightspeed not synced" in shown.stdout
        # the merchant gives one a customSku in Lightspeed: it is synced, and counted no more
        CLOCK.advance(60)
        uncoded[1].code = "GIFT-25"
        uncoded[1].updated_at = CLOCK.now()
        third = pull(store, conn)
        assert third.new == 1 and "GIFT-25" in local_skus(store, conn)
        (item,) = status_report(store, CLOCK.now(), ["shop"])
        assert item.uncoded == 4


def test_lightspeed_sku_field_system_sku_syncs_every_item_and_finds_by_it(store: Store) -> None:
    from synccli.connectors.base import NewProduct
    from synccli.errors import Rejected

    with start("lightspeed", n_products=12) as running:
        app = running.app
        conn = connect(store, running, sku_field="systemSku")
        report = pull(store, conn)
        items = [p for p, _ in app.items()]
        assert report.errors == [] and report.uncoded == 0
        assert report.new == len(items) == 14
        assert local_skus(store, conn) == {f"21{p.seq:010d}" for p in items}
        gift = next(p for p in items if not p.code)
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            found = jc.connector.find_product(f"21{gift.seq:010d}")
            assert found is not None and found.remote_id == str(gift.seq)
            with pytest.raises(Rejected, match="systemSku"):
                jc.connector.create_product(NewProduct("219999999999", "New", Decimal(1)))
        assert app.counters.creates["product"] == 0


def test_lightspeed_sku_field_manufacturer_sku_for_pull_find_and_create(store: Store) -> None:
    from synccli.connectors.base import NewProduct

    with start("lightspeed", n_products=6, uncoded_items=0) as running:
        app = running.app
        conn = connect(store, running, sku_field="manufacturerSku")
        products = sorted(app.catalogue.tenant(app.tenant).products.values(), key=lambda p: p.seq)
        for n, p in enumerate(products[:4]):
            app.set_codes(p, manufacturerSku=f"MFR-{n}")
        report = pull(store, conn)
        assert report.errors == [] and (report.new, report.uncoded) == (4, 2)
        assert local_skus(store, conn) == {f"MFR-{n}" for n in range(4)}
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            assert jc.connector.find_product("MFR-2").remote_id == str(products[2].seq)
            assert jc.connector.find_product(products[2].code) is None  # not the customSku
            made = jc.connector.create_product(NewProduct("MFR-NEW", "Made at sale", Decimal(3)))
            assert made.code == "MFR-NEW"
            assert jc.connector.find_product("MFR-NEW").remote_id == made.remote_id


def test_lightspeed_unknown_sku_field_is_refused_naming_the_choices(store: Store) -> None:
    from synccli.errors import ConfigError

    with start("lightspeed") as running:
        conn = connect(store, running, sku_field="barcode")
        with (
            pytest.raises(ConfigError, match="customSku, systemSku"),
            job_run(store, "pull-products", conn, clock=CLOCK) as jc,
        ):
            jc.connector.find_product("X")


def test_lightspeed_simulator_reads_an_unencoded_plus_and_archive_1() -> None:
    import requests

    with start("lightspeed", n_customers=4) as running:
        app = running.app
        token = app.issue_tokens()["access_token"]
        base = f"{running.url}/API/V3/Account/{app.tenant}"
        headers = {"Authorization": f"Bearer {token}"}
        gone = world_customers(running)[0]
        gone.archived = True
        listed = requests.get(f"{base}/Customer.json?archive=1", headers=headers, timeout=10)
        assert listed.status_code == 200
        ids = {c["customerID"] for c in listed.json()["Customer"]}
        assert str(gone.seq) in ids and len(ids) == 4
        since = "2000-01-01T00:00:00+00:00"  # the '+' unencoded: it arrives as a space
        raw = requests.get(f"{base}/Item.json?timeStamp=>,{since}", headers=headers, timeout=10)
        assert raw.status_code == 200 and raw.json()["Item"]


def test_xero_link_customers_matches_a_contact_by_its_contact_number(store: Store) -> None:
    with start("xero", n_customers=6) as running:
        conn = connect(store, running)
        target = world_customers(running)[4]
        target.account_number, target.code = "ACC-OTHER-4", "SHOP-4004"
        with store.session() as s:
            s.add(
                Customer(
                    connection_id=conn.id,
                    name="Someone Else",
                    email=None,
                    account_number="shop-4004",
                    created_at=CLOCK.now(),
                )
            )
        report = link_run(store, conn)
        assert report.linked == 1
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            assert jc.connector.find_customers(account="SHOP-4004")[0].remote_id == target.id
