"""The Xero simulator, spoken to over real HTTP on loopback (no connector involved)."""

from __future__ import annotations

import base64
import threading
import time
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from xero_helpers import Raw, running

from synccli.clock import SimClock
from synccli.sandbox.xero import API, XeroSandbox, create, parse_modified_since, rfc1123


@pytest.fixture(scope="module")
def shared():
    """A read-mostly sandbox shared by the tests that do not move time or limits."""
    app = XeroSandbox(products=60, customers=40, tenants=2)
    with running(app) as server:
        yield app, server, Raw(app, server)


def _token(server, app, form, basic=True, client=None):
    cid, secret = client or (app.client_id, app.client_secret)
    headers = {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    else:
        form = {**form, "client_id": cid, "client_secret": secret}
    return requests.post(f"{server.url}/connect/token", data=form, headers=headers, timeout=10)


def _invoice(contact_id, *lines, number=None, **extra):
    el = {
        "Type": "ACCREC",
        "Contact": {"ContactID": contact_id},
        "Date": "2026-05-01",
        "Status": "AUTHORISED",
        "LineAmountTypes": "Exclusive",
        "LineItems": list(lines),
        **extra,
    }
    if number:
        el["InvoiceNumber"] = number
    return el


def _line(code, qty=1, unit=10, tax="OUTPUT2", **extra):
    return {
        "ItemCode": code,
        "Description": f"{code} line",
        "Quantity": qty,
        "UnitAmount": unit,
        "AccountCode": "200",
        "TaxType": tax,
        **extra,
    }


# auth ------------------------------------------------------------------------------------------
def test_bad_token_gets_401_and_expired_token_gets_token_expired_body():
    clock = SimClock()
    app = XeroSandbox(products=3, customers=2, clock=clock)
    with running(app) as server:
        raw = Raw(app, server)
        bad = requests.get(
            f"{server.url}{API}/Items",
            headers={"Authorization": "Bearer nope", "xero-tenant-id": app.tenant},
            timeout=10,
        )
        assert bad.status_code == 401
        assert bad.json()["Detail"] == "AuthenticationUnsuccessful"
        assert raw.get("Items").status_code == 200
        clock.advance(seconds=1801)
        expired = raw.get("Items")
        assert expired.status_code == 401
        body = expired.json()
        assert body["Title"] == "Unauthorized" and body["Status"] == 401
        assert body["Detail"].startswith("TokenExpired: token expired at ")
        assert expired.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_missing_wrong_or_other_tenant_gets_403_authentication_unsuccessful(shared):
    app, server, raw = shared
    other = [t for t in app.orgs if t != app.tenant][0]
    for tenant in ("", "not-a-tenant", other):
        resp = raw.get("Items", **{"xero-tenant-id": tenant})
        assert resp.status_code == 403
        assert resp.json()["Title"] == "Forbidden"
        assert resp.json()["Detail"] == "AuthenticationUnsuccessful"
    # the other tenant is served to a token that was granted it, with its own data
    raw_b = Raw(app, server, tenant=other)
    items_b = {i["ItemID"] for i in raw_b.get("Items").json()["Items"]}
    items_a = {i["ItemID"] for i in raw.get("Items").json()["Items"]}
    assert items_a and items_b and not items_a & items_b


def test_client_credentials_custom_connection_needs_no_tenant_header(shared):
    app, server, _ = shared
    creds = app.credentials(grant="client_credentials")
    resp = _token(
        server,
        app,
        {"grant_type": "client_credentials"},
        client=(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 200
    body = resp.json()
    assert "refresh_token" not in body and body["expires_in"] == 1800
    items = requests.get(
        f"{server.url}{API}/Items",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert items.status_code == 200 and len(items.json()["Items"]) == 60
    # an ordinary app may not use client_credentials
    refused = _token(server, app, {"grant_type": "client_credentials"})
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    bad_secret = _token(
        server,
        app,
        {"grant_type": "client_credentials"},
        client=(creds["client_id"], "wrong-secret"),
    )
    assert bad_secret.json() == {"error": "invalid_client"}


def test_authorize_redirects_with_code_and_state_and_code_is_single_use(shared):
    app, server, _ = shared
    redirect = "http://localhost:8765/callback"
    resp = requests.get(
        f"{server.url}/identity/connect/authorize",
        params={
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": redirect,
            "scope": "offline_access accounting.settings",
            "state": "xyz-123",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    query = parse_qs(location.query)
    assert query["state"] == ["xyz-123"]
    form = {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect}
    first = _token(server, app, form, basic=False)  # client id/secret in the body (xero-python)
    assert first.status_code == 200 and first.json()["refresh_token"]
    again = _token(server, app, form)
    assert again.status_code == 400 and again.json() == {"error": "invalid_grant"}
    conns = requests.get(
        f"{server.url}/connections",
        headers={"Authorization": f"Bearer {first.json()['access_token']}"},
        timeout=10,
    ).json()
    assert {c["tenantId"] for c in conns} == set(app.orgs)
    assert all(c["tenantType"] == "ORGANISATION" and c["id"] != c["tenantId"] for c in conns)


def test_refresh_token_rotates_and_previous_one_has_a_grace_period():
    clock = SimClock()
    app = XeroSandbox(products=1, customers=1, clock=clock)
    with running(app) as server:
        rt1 = app.issue_tokens()["refresh_token"]
        r1 = _token(server, app, {"grant_type": "refresh_token", "refresh_token": rt1})
        rt2 = r1.json()["refresh_token"]
        assert rt2 != rt1
        clock.advance(minutes=29)  # the answer was lost: rt1 still works within 30 minutes
        assert _token(server, app, {"grant_type": "refresh_token", "refresh_token": rt1}).ok
        clock.advance(minutes=2)
        dead = _token(server, app, {"grant_type": "refresh_token", "refresh_token": rt1})
        assert dead.status_code == 400 and dead.json() == {"error": "invalid_grant"}
        assert _token(server, app, {"grant_type": "refresh_token", "refresh_token": rt2}).ok


def test_disconnected_tenant_is_refused(shared):
    app, server, _ = shared
    tenant = app.add_tenant("Disconnect Me", products=1)
    raw = Raw(app, server, tenant=tenant)
    assert raw.get("Items").status_code == 200
    conn = requests.get(f"{server.url}/connections", headers=raw.headers(), timeout=10).json()
    assert [c["tenantName"] for c in conn] == ["Disconnect Me"]
    gone = requests.delete(
        f"{server.url}/connections/{conn[0]['id']}", headers=raw.headers(), timeout=10
    )
    assert gone.status_code == 204
    assert raw.get("Items").status_code == 403


# paging, filters, formats ----------------------------------------------------------------------
def test_items_are_unpaged_5000_in_one_response_and_page_is_ignored():
    app = XeroSandbox(products=5000, customers=0)
    with running(app) as server:
        raw = Raw(app, server)
        one = raw.get("Items")
        items = one.json()["Items"]
        assert len(items) == 5000 and len({i["ItemID"] for i in items}) == 5000
        assert "pagination" not in one.json()
        assert raw.get("Items", {"page": 2}).json()["Items"] == items
        assert app.counters.total("GET", "Items") == 2
        sample = items[0]
        assert sample["UpdatedDateUTC"].startswith("/Date(") and sample["UpdatedDateUTC"].endswith(
            "+0000)/"
        )
        assert isinstance(sample["QuantityOnHand"], int | float)
        assert sample["SalesDetails"]["TaxType"] == "OUTPUT2"


@pytest.mark.slow
@pytest.mark.parametrize("rows", [100, None], ids=["short-pages", "pagesize-honoured"])
def test_contacts_paging_returns_every_record_exactly_once(rows: int | None):
    app = XeroSandbox(products=0, customers=2345, page_rows=rows)
    per_page = rows or 1000
    pages = -(-2345 // per_page)
    with running(app) as server:
        raw = Raw(app, server)
        seen, page = [], 1
        while True:
            body = raw.get(
                "Contacts", {"page": page, "pageSize": 1000, "order": "UpdatedDateUTC ASC"}
            ).json()
            seen += [c["ContactID"] for c in body["Contacts"]]
            # the size asked for is echoed; only pageCount says how many pages there are
            assert body["pagination"] == {
                "page": page,
                "pageSize": 1000,
                "pageCount": pages,
                "itemCount": 2345,
            }
            assert len(body["Contacts"]) == (per_page if page < pages else 2345 % per_page)
            if page >= body["pagination"]["pageCount"]:
                break
            page += 1
        assert len(seen) == len(set(seen)) == 2345 == len(app.world().customers)
        # pageSize is clamped to 1000; the default is 100; unpaged answers drop Addresses
        assert len(raw.get("Contacts", {"page": 1, "pageSize": 5000}).json()["Contacts"]) == (
            per_page
        )
        assert len(raw.get("Contacts", {"page": 1}).json()["Contacts"]) == 100
        unpaged = raw.get("Contacts").json()
        assert len(unpaged["Contacts"]) == 2345 and "Addresses" not in unpaged["Contacts"][0]


def test_if_modified_since_returns_only_changed_records():
    clock = SimClock()
    app = XeroSandbox(products=40, customers=20, clock=clock)
    with running(app) as server:
        raw = Raw(app, server)
        clock.advance(seconds=10.5)
        mark = clock.now()
        clock.advance(seconds=5)
        changed = {p.id for p in app.catalogue.change_prices(app.tenant, 7)}
        added = {c.id for c in app.catalogue.add_customers(app.tenant, 3)}
        for header in (mark.isoformat(), mark.strftime("%Y-%m-%dT%H:%M:%S"), rfc1123(mark)):
            items = raw.get("Items", **{"If-Modified-Since": header}).json()["Items"]
            assert {i["ItemID"] for i in items} == changed
            contacts = raw.get("Contacts", {"page": 1}, **{"If-Modified-Since": header}).json()
            assert {c["ContactID"] for c in contacts["Contacts"]} == added
        # stock movements leave Item.UpdatedDateUTC alone unless the switch says otherwise
        clock.advance(seconds=5)
        later = clock.now()
        clock.advance(seconds=5)
        app.catalogue.change_stock(app.tenant, 4)
        assert raw.get("Items", **{"If-Modified-Since": later.isoformat()}).json()["Items"] == []
        app.stock_bumps_item_timestamp = True
        assert (
            len(raw.get("Items", **{"If-Modified-Since": later.isoformat()}).json()["Items"]) == 4
        )


def test_if_modified_since_is_second_precision():
    assert parse_modified_since("2026-02-06T12:17:43.202-08:00").isoformat() == (
        "2026-02-06T20:17:43+00:00"
    )
    assert parse_modified_since("Sun, 10 Aug 2014 15:14:46 GMT").isoformat() == (
        "2014-08-10T15:14:46+00:00"
    )
    assert parse_modified_since("garbage") is None


def test_where_filters_and_search(shared):
    app, _, raw = shared
    world = app.world()
    product = sorted(world.products.values(), key=lambda p: p.code)[3]
    found = raw.get("Items", {"where": f'Code=="{product.code}"'}).json()["Items"]
    assert [i["ItemID"] for i in found] == [product.id]
    customer = list(world.customers.values())[5]
    by_email = raw.get("Contacts", {"where": f'EmailAddress=="{customer.email}"'})
    assert [c["ContactID"] for c in by_email.json()["Contacts"]] == [customer.id]
    # == compares case included (calcinai/xero-php#416); ToLower() is the way round it
    upper = raw.get("Contacts", {"where": f'EmailAddress=="{customer.email.upper()}"'})
    assert upper.json()["Contacts"] == []
    lowered = f'EmailAddress.ToLower()=="{customer.email.lower()}"'
    by_lower = raw.get("Contacts", {"where": lowered})
    assert [c["ContactID"] for c in by_lower.json()["Contacts"]] == [customer.id]
    by_account = raw.get("Contacts", {"where": f'AccountNumber=="{customer.account_number}"'})
    assert [c["ContactID"] for c in by_account.json()["Contacts"]] == [customer.id]
    term = raw.get("Contacts", {"searchTerm": customer.last_name.lower()}).json()["Contacts"]
    assert customer.id in {c["ContactID"] for c in term}
    assert all(customer.last_name.lower() in str(c).lower() for c in term)
    ids = raw.get("Contacts", {"IDs": customer.id}).json()["Contacts"]
    assert [c["ContactID"] for c in ids] == [customer.id]
    combined = raw.get("Items", {"where": f'IsSold==true AND Code.StartsWith("{product.code}")'})
    assert [i["Code"] for i in combined.json()["Items"]] == [product.code]
    bad = raw.get("Items", {"where": 'Colour=="red"'})
    assert bad.status_code == 400 and bad.json()["Type"] == "QueryParseException"


# limits ----------------------------------------------------------------------------------------
def test_minute_limit_429_with_headers_then_service_after_the_window():
    app = XeroSandbox(products=2, customers=0, time_scale=30, limits={"per_minute": 10})
    with running(app) as server:
        raw = Raw(app, server)
        remaining = [int(raw.get("Items").headers["X-MinLimit-Remaining"]) for _ in range(10)]
        assert remaining == list(range(9, -1, -1))
        blocked = raw.get("Items")
        assert blocked.status_code == 429
        assert blocked.headers["X-Rate-Limit-Problem"] == "minute"
        assert blocked.headers["X-MinLimit-Remaining"] == "0"
        assert int(blocked.headers["X-DayLimit-Remaining"]) == 4990
        assert "X-AppMinLimit-Remaining" in blocked.headers
        wait = float(blocked.headers["Retry-After"])
        assert 0 < wait <= 2.0  # a 60 s window at time scale 30
        assert app.counters.throttled == 1
        time.sleep(wait + 0.05)
        again = raw.get("Items")
        assert again.status_code == 200 and again.headers["X-MinLimit-Remaining"] == "9"


def test_day_limit_429_says_day_and_resets_on_the_clock():
    clock = SimClock()
    app = XeroSandbox(products=2, customers=0, clock=clock, limits={"per_day": 3})
    with running(app) as server:
        raw = Raw(app, server)
        assert [raw.get("Items").status_code for _ in range(3)] == [200, 200, 200]
        blocked = raw.get("Items")
        assert blocked.status_code == 429
        assert blocked.headers["X-Rate-Limit-Problem"] == "day"
        assert blocked.headers["X-DayLimit-Remaining"] == "0"
        assert 86000 < int(blocked.headers["Retry-After"]) <= 86401
        clock.advance(days=1)
        raw.creds = app.credentials()  # the old access token expired meanwhile
        assert raw.get("Items").status_code == 200


def test_too_many_requests_in_flight_get_429_concurrent():
    app = XeroSandbox(products=2, customers=0, limits={"concurrency": 1})
    app.faults.slow_seconds = 0.6
    app.faults.add("slow", method="GET", path="/Items$", times=1)
    with running(app) as server:
        raw = Raw(app, server)
        results = []
        slow = threading.Thread(target=lambda: results.append(raw.get("Items").status_code))
        slow.start()
        time.sleep(0.2)
        fast = Raw(app, server)
        fast.creds = raw.creds
        second = fast.get("Contacts")
        slow.join()
        assert second.status_code == 429
        assert second.headers["X-Rate-Limit-Problem"] == "concurrent"
        assert results == [200]


# writes ----------------------------------------------------------------------------------------
def test_lost_response_leaves_the_invoice_created():
    app = XeroSandbox(products=5, customers=3)
    app.faults.add("lost", method="PUT", path="/Invoices", times=1)
    with running(app) as server:
        raw = Raw(app, server)
        contact = next(iter(app.world().customers))
        code = next(iter(app.world().products.values())).code
        with pytest.raises(requests.ConnectionError):
            raw.put(
                "Invoices",
                {"Invoices": [_invoice(contact, _line(code), number="LOST-1")]},
                {"summarizeErrors": "false"},
            )
        found = raw.get("Invoices", {"InvoiceNumbers": "LOST-1"}).json()["Invoices"]
        assert len(found) == 1 and found[0]["Status"] == "AUTHORISED"
        assert app.counters.creates["invoice"] == 1


def test_idempotency_key_replays_and_rejects_a_different_body():
    clock = SimClock()
    app = XeroSandbox(products=5, customers=3, clock=clock)
    with running(app) as server:
        raw = Raw(app, server)
        contact = next(iter(app.world().customers))
        code = next(iter(app.world().products.values())).code
        body = {"Invoices": [_invoice(contact, _line(code), number="IDEM-1")]}
        q = {"summarizeErrors": "false"}
        first = raw.put("Invoices", body, q, **{"Idempotency-Key": "order-1-v1"})
        second = raw.put("Invoices", body, q, **{"Idempotency-Key": "order-1-v1"})
        assert first.json()["Invoices"][0]["InvoiceID"] == second.json()["Invoices"][0]["InvoiceID"]
        assert len(app.world().invoices) == 1
        other = {"Invoices": [_invoice(contact, _line(code, qty=2), number="IDEM-1")]}
        clash = raw.put("Invoices", other, q, **{"Idempotency-Key": "order-1-v1"})
        assert clash.status_code == 400 and "different request" in clash.json()["Message"]
        too_long = raw.put("Invoices", body, q, **{"Idempotency-Key": "k" * 129})
        assert too_long.status_code == 400
        clock.advance(minutes=7)  # outside the replay window: a new request (duplicate number)
        late = raw.put("Invoices", body, q, **{"Idempotency-Key": "order-1-v1"})
        assert late.json()["Invoices"][0]["ValidationErrors"][0]["Message"] == (
            "Invoice # must be unique."
        )


def test_validation_errors_per_element_and_summarised(shared):
    app, _, raw = shared
    world = app.world()
    contact = next(iter(world.customers))
    code = sorted(p.code for p in world.products.values())[0]
    ok_line = _line(code)
    q = {"summarizeErrors": "false"}
    body = {
        "Invoices": [
            _invoice(contact, ok_line, number="V-OK"),
            _invoice(contact, _line("NOPE-1"), number="V-1"),
            _invoice("6f0c6a5e-0000-4000-8000-000000000001", ok_line, number="V-2"),
            _invoice(contact, _line(code, tax="GST on Income"), number="V-3"),
        ]
    }
    resp = raw.put("Invoices", body, q)
    assert resp.status_code == 200
    els = resp.json()["Invoices"]
    assert [e["StatusAttributeString"] for e in els] == ["OK", "ERROR", "ERROR", "ERROR"]
    assert els[1]["ValidationErrors"] == [{"Message": "Item code 'NOPE-1' is not valid"}]
    assert "could not be found" in els[2]["ValidationErrors"][0]["Message"]
    assert els[3]["ValidationErrors"][0]["Message"] == (
        "The TaxType code GST on Income does not exist or cannot be used for this type of "
        "transaction."
    )
    # default (summarised): 400 ValidationException, yet the valid sibling is created
    summarised = raw.put(
        "Invoices",
        {
            "Invoices": [
                _invoice(contact, ok_line, number="S-OK"),
                _invoice(contact, _line("NOPE-2"), number="S-BAD"),
            ]
        },
    )
    assert summarised.status_code == 400
    err = summarised.json()
    assert (err["ErrorNumber"], err["Type"]) == (10, "ValidationException")
    assert err["Elements"][0]["ValidationErrors"][0]["Message"] == "Item code 'NOPE-2' is not valid"
    assert raw.get("Invoices", {"InvoiceNumbers": "S-OK"}).json()["Invoices"]
    # unwrapped body
    unwrapped = raw.put("Invoices", _invoice(contact, ok_line), q)
    assert unwrapped.status_code == 400
    assert (unwrapped.json()["ErrorNumber"], unwrapped.json()["Type"]) == (
        17,
        "NoDataProcessedException",
    )
    # a new contact whose name an active contact has
    taken = next(iter(world.customers.values())).name
    dup = raw.put("Contacts", {"Contacts": [{"Name": taken}]}, q).json()["Contacts"][0]
    assert dup["ValidationErrors"][0]["Message"] == (
        f"The contact name {taken} is already assigned to another contact. The contact name "
        "must be unique across all active contacts."
    )
    # a ContactID that is not a GUID: Xero answers 500
    assert raw.put("Invoices", {"Invoices": [_invoice("junk", ok_line)]}, q).status_code == 500
    # a duplicate item code
    item = raw.put("Items", {"Items": [{"Code": code, "Name": "Twin"}]}, q).json()["Items"][0]
    assert (
        item["ValidationErrors"][0]["Message"]
        == f"Price List Item with Code '{code}' already exists"
    )


def test_invoice_totals_tax_rates_dates_and_stock(shared):
    app, _, raw = shared
    world = app.world()
    contact = next(iter(world.customers))
    item = sorted(world.products.values(), key=lambda p: p.code)[10]
    before = item.stock
    body = {
        "Invoices": [
            _invoice(
                contact,
                _line(item.code, qty=3, unit=12.345),
                _line(item.code, qty=1, unit=10, tax="OUTPUT"),
                _line(item.code, qty=2, unit=7.5, tax="ZERORATEDOUTPUT"),
                number="T-1",
            )
        ]
    }
    el = raw.put("Invoices", body, {"summarizeErrors": "false", "unitdp": "4"}).json()["Invoices"][
        0
    ]
    # 3 x 12.345 = 37.035 -> 37.04 (+5.56); 10 (+1.25); 15 (+0)
    assert [line["LineAmount"] for line in el["LineItems"]] == [37.04, 10, 15]
    assert [line["TaxAmount"] for line in el["LineItems"]] == [5.56, 1.25, 0]
    assert (el["SubTotal"], el["TotalTax"], el["Total"]) == (62.04, 6.81, 68.85)
    assert el["LineItems"][0]["UnitAmount"] == 12.345
    assert el["Date"] == "/Date(1777593600000+0000)/" and el["DateString"] == "2026-05-01T00:00:00"
    assert item.stock == before - 6
    # without unitdp=4 the unit amount is rounded to 2 dp first
    two = raw.put(
        "Invoices",
        {"Invoices": [_invoice(contact, _line(item.code, 3, 12.345))]},
        {"summarizeErrors": "false"},
    ).json()["Invoices"][0]
    assert two["LineItems"][0]["UnitAmount"] == 12.35 and two["SubTotal"] == 37.05
    assert Decimal(str(two["Total"])) == Decimal("42.61")
    assert date.fromisoformat(two["DueDateString"][:10]) > date(2026, 5, 1)


def test_contact_details_on_an_invoice_overwrite_the_contact(shared):
    """The hazard the connector must avoid (§4) is modelled, so a test can catch it."""
    app, _, raw = shared
    world = app.world()
    victim = list(world.customers.values())[7]
    code = next(iter(world.products.values())).code
    before = app.counters.updates["customer"]
    raw.put(
        "Invoices",
        {
            "Invoices": [
                _invoice(
                    None, _line(code), Contact={"Name": victim.name, "EmailAddress": "x@evil.test"}
                )
            ]
        },
        {"summarizeErrors": "false"},
    )
    assert victim.email == "x@evil.test"
    assert app.counters.updates["customer"] == before + 1


def test_every_invoice_body_is_recorded(shared):
    app, _, raw = shared
    contact = next(iter(app.world().customers))
    n = len(app.counters.requests)
    raw.put(
        "Invoices", {"Invoices": [_invoice(contact, _line("NOPE-9"))]}, {"summarizeErrors": "false"}
    )
    recorded = app.counters.requests[n:]
    assert [(r["kind"], r.get("rejected")) for r in recorded] == [("invoice", True)]
    assert recorded[0]["body"]["Contact"] == {"ContactID": contact}


def test_create_factory_and_add_tenant():
    app = create(products=3, customers=2, tenants=3)
    assert len(app.orgs) == 3 and app.tenant in app.orgs
    assert all(len(app.catalogue.tenant(t).products) == 3 for t in app.orgs)
    tid = app.add_tenant(products=1, customers=1)
    assert len(app.catalogue.tenant(tid).products) == 1


# the official SDK against the sandbox ----------------------------------------------------------
def test_official_xero_python_sdk_lists_items_contacts_and_creates_an_invoice(shared, monkeypatch):
    from xero_python.accounting import (
        AccountingApi,
        Contact,
        Invoice,
        Invoices,
        LineAmountTypes,
        LineItem,
    )
    from xero_python.api_client import ApiClient, Configuration
    from xero_python.api_client.oauth2 import OAuth2Token, TokenApi

    app, server, _ = shared
    token_url = f"{server.url}/connect/token"
    for attr in ("refresh_token_url", "client_credentials_token_url"):
        monkeypatch.setattr(TokenApi, attr, token_url)
    creds = app.credentials()
    store = {
        "access_token": creds["access_token"],
        "refresh_token": creds["refresh_token"],
        "expires_in": 1800,
        "expires_at": time.time() - 10,  # already expired: the SDK refreshes at our endpoint
        "token_type": "Bearer",
        "scope": creds["scope"].split(),
    }
    client = ApiClient(
        Configuration(oauth2_token=OAuth2Token(creds["client_id"], creds["client_secret"])),
        pool_threads=1,
    )
    client.oauth2_token_getter(lambda: store)
    client.oauth2_token_saver(lambda token: store.update(token))
    api = AccountingApi(client, base_url=f"{server.url}{API}")
    tenant = creds["tenant_id"]

    items = api.get_items(tenant)
    assert store["access_token"] != creds["access_token"]  # refreshed through the sandbox
    assert len(items.items) == len(app.world().products)
    first = sorted(items.items, key=lambda i: i.code)[0]
    assert first.quantity_on_hand is not None and first.updated_date_utc.year >= 2025
    contacts = api.get_contacts(tenant, page=1)
    assert len(contacts.contacts) == len(
        [c for c in app.world().customers.values() if not c.archived]
    )
    contact_id = contacts.contacts[0].contact_id
    created = api.create_invoices(
        tenant,
        Invoices(
            invoices=[
                Invoice(
                    type="ACCREC",
                    contact=Contact(contact_id=contact_id),
                    date=date(2026, 5, 1),
                    due_date=date(2026, 5, 15),
                    invoice_number="SDK-1",
                    status="AUTHORISED",
                    line_amount_types=LineAmountTypes.EXCLUSIVE,
                    line_items=[
                        LineItem(
                            item_code=first.code,
                            description="via SDK",
                            quantity=2.0,
                            unit_amount=12.5,
                            account_code="200",
                            tax_type="OUTPUT2",
                        )
                    ],
                )
            ]
        ),
        summarize_errors=False,
        idempotency_key="sdk-key-1",
    )
    inv = created.invoices[0]
    assert str(inv.contact.contact_id) == str(contact_id)
    assert inv.total == 28.75 and inv.status == "AUTHORISED"
    assert inv.date == date(2026, 5, 1)
    assert app.world().invoices[str(inv.invoice_id)].number == "SDK-1"
    assert timedelta(0) <= app.clock.now() - app.world().invoices[str(inv.invoice_id)].created_at
