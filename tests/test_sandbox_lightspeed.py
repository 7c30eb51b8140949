"""The Lightspeed R-Series simulator, spoken to over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from decimal import Decimal
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from lightspeed_helpers import api, bearer, get, make_app, serve

from synccli.sandbox.lightspeed import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, create

REL_SHOPS = quote('["ItemShops"]', safe="")
REL_CONTACT = quote('["Contact"]', safe="")


def items_of(body: dict) -> list[dict]:
    value = body.get("Item", [])
    return value if isinstance(value, list) else [value]


def token_post(server, **form) -> requests.Response:
    form.setdefault("client_id", DEFAULT_CLIENT_ID)
    form.setdefault("client_secret", DEFAULT_CLIENT_SECRET)
    return requests.post(f"{server.url}/auth/oauth/token", data=form, timeout=10)


# ---------------------------------------------------------------------------------------------
# auth


def test_bad_auth_is_rejected_with_lightspeeds_status_and_body():
    app = make_app()
    with serve(app) as server:
        url = api(server, app, "Item")
        missing = requests.get(url, timeout=10)
        assert missing.status_code == 401
        assert missing.json()["error"] == "access_denied"
        unknown = get(url, "not-a-token")
        assert unknown.status_code == 401
        assert unknown.json() == {
            "error": "access_denied",
            "error_description": "The resource owner or authorization server denied the request.",
            "message": "The resource owner or authorization server denied the request.",
            "hint": "Access token could not be verified",
        }
        tokens = app.issue_tokens(ttl=1800)
        assert get(url, tokens["access_token"]).status_code == 200
        app.clock.advance(1800)  # the TTL runs on the sandbox clock
        expired = get(url, tokens["access_token"])
        assert expired.status_code == 401
        assert expired.json()["hint"] == "Access token could not be verified"
        # a token of this account on another account's path: the R-Series 403 body
        other = get(
            f"{server.url}/API/V3/Account/999/Item.json", app.issue_tokens()["access_token"]
        )
        assert other.status_code == 403
        assert other.json()["errorClass"] == "InsufficientRightsException"
        assert set(other.json()) == {"httpCode", "httpMessage", "message", "errorClass"}


def test_token_endpoint_errors_use_the_oauth_shape():
    app = make_app()
    with serve(app) as server:
        bad_secret = token_post(
            server, grant_type="refresh_token", refresh_token="x", client_secret="wrong"
        )
        assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
        missing = token_post(server, grant_type="refresh_token")
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
        unknown = token_post(server, grant_type="refresh_token", refresh_token="def50200nope")
        assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
        rt = app.issue_tokens()["refresh_token"]
        scoped = token_post(
            server, grant_type="refresh_token", refresh_token=rt, scope="employee:all"
        )
        assert scoped.status_code == 400 and scoped.json()["error"] == "invalid_grant"
        ok = token_post(server, grant_type="refresh_token", refresh_token=rt)
        assert ok.status_code == 200
        assert set(ok.json()) >= {"token_type", "expires_in", "access_token", "refresh_token"}
        assert ok.json()["acct"] == app.tenant


def test_refresh_tokens_rotate_and_the_old_one_dies_when_the_new_access_token_is_used():
    app = make_app()
    with serve(app) as server:
        first = app.issue_tokens()
        url = api(server, app, "Shop")
        r1 = token_post(server, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert r1.status_code == 200
        assert r1.json()["refresh_token"] != first["refresh_token"]
        # the answer may have been lost: until the new access token is used, the old refresh
        # token still works (2026-01-15 changelog)
        r2 = token_post(server, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert r2.status_code == 200
        # the access token a refresh replaces is revoked
        revoked = get(url, first["access_token"])
        assert revoked.status_code == 401
        assert revoked.json()["hint"] == "Access token has been revoked"
        assert get(url, r2.json()["access_token"]).status_code == 200
        spent = token_post(server, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
        assert (
            token_post(
                server, grant_type="refresh_token", refresh_token=r2.json()["refresh_token"]
            ).status_code
            == 200
        )


def test_switch_revokes_the_old_refresh_token_at_once():
    app = make_app(revoke_on_first_use=False)
    with serve(app) as server:
        first = app.issue_tokens()
        assert (
            token_post(
                server, grant_type="refresh_token", refresh_token=first["refresh_token"]
            ).status_code
            == 200
        )
        again = token_post(server, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_authorize_redirects_with_code_and_state_and_the_code_is_single_use():
    app = make_app()
    with serve(app) as server:
        verifier = "v" * 50
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        challenge = challenge.rstrip(b"=").decode()
        resp = requests.get(
            f"{server.url}/auth/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": DEFAULT_CLIENT_ID,
                "scope": "employee:all",
                "state": "s-123",
                "redirect_uri": "https://shop.example/cb",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code == 302
        location = urlsplit(resp.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == "https://shop.example/cb"
        query = parse_qs(location.query)
        assert query["state"] == ["s-123"]
        code = query["code"][0]
        wrong = token_post(
            server,
            grant_type="authorization_code",
            code=code,
            redirect_uri="https://shop.example/cb",
            code_verifier="x" * 50,
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        ok = token_post(
            server,
            grant_type="authorization_code",
            code=code,
            redirect_uri="https://shop.example/cb",
            code_verifier=verifier,
        )
        assert ok.status_code == 200, ok.text
        assert get(api(server, app, "Shop"), ok.json()["access_token"]).status_code == 200
        reused = token_post(
            server,
            grant_type="authorization_code",
            code=code,
            redirect_uri="https://shop.example/cb",
            code_verifier=verifier,
        )
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        # codes live 60 s
        resp = requests.get(
            f"{server.url}/auth/oauth/authorize",
            allow_redirects=False,
            params={
                "response_type": "code",
                "client_id": DEFAULT_CLIENT_ID,
                "redirect_uri": "https://shop.example/cb",
            },
            timeout=10,
        )
        late = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        app.clock.advance(61)
        expired = token_post(
            server,
            grant_type="authorization_code",
            code=late,
            redirect_uri="https://shop.example/cb",
        )
        assert expired.json()["hint"] == "Authorization code has expired"


def test_account_json_names_the_account():
    app = make_app(jwt_access_tokens=True)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        body = get(f"{server.url}/API/V3/Account.json", token).json()
        assert body["Account"]["accountID"] == app.tenant
        assert body["Account"]["link"]["@attributes"]["href"] == f"/API/V3/Account/{app.tenant}"
        claims = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        assert claims["acct"] == app.tenant


# ---------------------------------------------------------------------------------------------
# wire format and paging


def test_paging_returns_every_record_exactly_once_following_next():
    app = make_app(products=250)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        for sort, token_len in (("timeStamp", 2), ("itemID", 1)):
            url = f"{api(server, app, 'Item')}?sort={sort}"
            seen: list[str] = []
            pages = 0
            previous = []
            while url:
                body = get(url, token).json()
                pages += 1
                seen += [i["itemID"] for i in items_of(body)]
                previous.append(body["@attributes"]["previous"])
                url = body["@attributes"]["next"]
                if url:
                    after = parse_qs(urlsplit(url).query)["after"][0]
                    decoded = json.loads(base64.b64decode(after))
                    assert len(decoded) == token_len
                    assert "limit=100" in url and f"sort={sort}" in url
            assert pages == 3
            # every item of the account: the catalogue's, and those with no customSku
            total = len(app.items())
            assert len(seen) == total and len(set(seen)) == total
            assert previous[0] == "" and previous[1] != ""


def test_a_change_between_pages_shows_on_the_next_page():
    # the sandbox keeps each listing's filtered, sorted rows between pages: a change made
    # meanwhile must show, exactly as on a listing built afresh
    app = make_app(products=250)
    world = app.catalogue.tenant(app.tenant)
    by_seq = sorted(world.products.values(), key=lambda p: p.seq)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        first = get(f"{api(server, app, 'Item')}?sort=itemID", token).json()
        renamed, archived = by_seq[150], by_seq[220]
        renamed.name = "Renamed Between Pages"
        archived.archived = True
        added = app.catalogue.gen.add_product(world)
        url, rest = first["@attributes"]["next"], []
        while url:
            body = get(url, token).json()
            rest += items_of(body)
            url = body["@attributes"]["next"]
        names = {i["itemID"]: i["description"] for i in rest}
        assert names[str(renamed.seq)] == "Renamed Between Pages"
        assert str(archived.seq) not in names
        assert rest[-1]["itemID"] == str(added.seq)
        live = [p for p, gone in app.items() if not (gone or p.archived)]
        assert len(items_of(first)) + len(rest) == len(live)


def test_limit_sort_and_cursor_are_validated():
    app = make_app(products=5)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Item")
        assert get(url + "?limit=101", token).status_code == 400
        bad_sort = get(url + "?sort=customSku", token)
        assert bad_sort.status_code == 400 and bad_sort.json()["httpCode"] == "400"
        body = get(url + "?limit=2", token).json()
        nxt = body["@attributes"]["next"]
        # the after token re-encoded by a client: '=' padding sent as %253D
        damaged = nxt.replace("%3D", "%253D") if "%3D" in nxt else nxt + "%253D"
        assert get(damaged, token).status_code == 400
        assert get(nxt, token).status_code == 200
        assert get(url + "?limit=0", token).json()["@attributes"]["next"] == ""
        count = get(url + "?count=1", token)
        assert count.json() == {"@attributes": {"count": str(len(app.items()))}}
        assert count.headers["X-LS-API-Request-Cost"] == "10"


def test_scalars_are_strings_single_rows_are_objects_and_empty_relations_are_empty_strings():
    app = make_app(products=3, customers=2)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        one = get(f"{api(server, app, 'Item')}?limit=1&load_relations={REL_SHOPS}", token).json()
        assert isinstance(one["Item"], dict)  # one row: an object, not a list
        item = one["Item"]
        assert all(isinstance(v, str) for v in item.values() if not isinstance(v, dict))
        shops = item["ItemShops"]["ItemShop"]
        assert [s["shopID"] for s in shops] == ["0", "1"]
        assert item["Prices"]["ItemPrice"][0]["useType"] == "Default"
        customer = get(
            f"{api(server, app, 'Customer')}?limit=1&load_relations={REL_CONTACT}", token
        ).json()["Customer"]
        assert customer["Contact"]["Phones"] == ""
        assert isinstance(customer["Contact"]["Emails"]["ContactEmail"], dict)
        none = get(f"{api(server, app, 'Item')}?itemID=99999", token).json()
        assert none == {"@attributes": {"next": "", "previous": ""}}
        single = get(
            f"{server.url}/API/V3/Account/{app.tenant}/Item/{item['itemID']}.json", token
        ).json()
        assert (
            single["@attributes"] == {"count": "1"} and single["Item"]["itemID"] == item["itemID"]
        )


def test_incremental_filter_returns_only_changed_records_in_every_accepted_form():
    app = make_app(products=40)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        mark = app.clock.now()
        app.clock.advance(5)
        changed = {str(p.seq) for p in app.catalogue.change_prices(app.tenant, 7)}
        url = api(server, app, "Item")
        iso = mark.isoformat()  # 2026-01-05T09:00:00+00:00
        forms = [
            f"timeStamp={quote('>,' + iso, safe='')}",  # fully encoded
            f"timeStamp=>,{iso.replace('+', '%2B')}",  # raw operator, + encoded
            f"timeStamp=%3E%2C{mark.strftime('%Y-%m-%dT%H:%M:%S')}Z",  # docs: ...%3A00Z form
            f"timeStamp=%3E%3D%2C{quote(mark.strftime('%Y-%m-%dT%H:%M:%S') + '+0000', safe='')}",
        ]
        for form in forms[:3]:
            body = get(f"{url}?{form}", token).json()
            assert {i["itemID"] for i in items_of(body)} == changed, form
        # >= includes the mark second: still only the changed ones (the rest are 90 days old)
        assert {i["itemID"] for i in items_of(get(f"{url}?{forms[3]}", token).json())} == changed
        later = (mark.replace(second=10)).isoformat()
        between = f"timeStamp={quote('><,' + iso + ',' + later, safe='')}"
        assert {i["itemID"] for i in items_of(get(f"{url}?{between}", token).json())} == changed
        older = f"timeStamp={quote('<,' + iso, safe='')}&limit=100"
        assert not changed & {i["itemID"] for i in items_of(get(f"{url}?{older}", token).json())}
        # an unencoded '+' arrives as a space: read as the '+' it was, as Lightspeed does
        raw_plus = get(f"{url}?timeStamp=>,{iso}", token)
        assert raw_plus.status_code == 200
        assert {i["itemID"] for i in items_of(raw_plus.json())} == changed
        # a date that is no date is still refused
        bad = get(f"{url}?timeStamp=>,2026-01-05 nine o'clock", token)
        assert bad.status_code == 400 and "%2B" in bad.json()["message"]


def test_stock_changes_move_only_the_itemshop_timestamp():
    app = make_app(products=20)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        mark = app.clock.now()
        app.clock.advance(3)
        moved = {str(p.seq) for p in app.catalogue.change_stock(app.tenant, 4)}
        since = quote(">," + mark.isoformat(), safe="")
        items = get(f"{api(server, app, 'Item')}?timeStamp={since}", token).json()
        assert items_of(items) == []
        shops = get(
            f"{api(server, app, 'ItemShop')}?shopID=0&sort=timeStamp&timeStamp={since}", token
        ).json()["ItemShop"]
        assert {s["itemID"] for s in shops} == moved and {s["shopID"] for s in shops} == {"0"}


def test_archived_parameter_and_neutral_deletes_show_as_archived_with_zero_stock():
    app = make_app(products=20)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Item")
        archived = {str(p.seq) for p in app.catalogue.archive(app.tenant, 3)}
        deleted = {str(p.seq) for p in app.catalogue.delete(app.tenant, 2)}
        default = {i["itemID"] for i in items_of(get(url, token).json())}
        total = len(app.items())  # the catalogue's 20 and the items with no customSku
        assert len(default) == total - 5 and not (archived | deleted) & default
        both = items_of(get(f"{url}?archived=true&load_relations={REL_SHOPS}", token).json())
        assert len(both) == total
        only = items_of(get(f"{url}?archived=only&load_relations={REL_SHOPS}", token).json())
        assert {i["itemID"] for i in only} == archived | deleted
        for item in only:
            if item["itemID"] in deleted:
                assert {s["qoh"] for s in item["ItemShops"]["ItemShop"]} == {"0"}


def test_delete_item_archives_it_and_zeroes_stock():
    app = make_app(products=5)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        item_id = items_of(get(api(server, app, "Item"), token).json())[0]["itemID"]
        url = f"{server.url}/API/V3/Account/{app.tenant}/Item/{item_id}.json"
        resp = requests.delete(url, headers=bearer(token), timeout=10)
        assert resp.status_code == 200
        assert resp.json()["Item"]["archived"] == "true"
        again = get(url + f"?load_relations={REL_SHOPS}", token).json()["Item"]
        assert {s["qoh"] for s in again["ItemShops"]["ItemShop"]} == {"0"}
        assert app.counters.updates["product"] == 1


def test_in_filter_takes_at_most_100_values_and_relation_filters_need_the_relation():
    app = make_app(products=150, customers=5)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        ids = [str(p.seq) for p, _ in app.items()]
        url = api(server, app, "Item")
        ok = get(f"{url}?itemID={quote('IN,[' + ','.join(ids[:100]) + ']', safe='')}", token)
        assert len(items_of(ok.json())) == 100
        too_many = get(f"{url}?itemID={quote('IN,[' + ','.join(ids[:101]) + ']', safe='')}", token)
        assert too_many.status_code == 400
        email = next(iter(app.catalogue.tenant(app.tenant).customers.values())).email
        curl = api(server, app, "Customer")
        unloaded = get(f"{curl}?Contact.email={quote('~,' + email, safe='')}", token)
        assert unloaded.status_code == 400
        loaded = get(
            f"{curl}?load_relations={REL_CONTACT}&Contact.email="
            f"{quote('~,' + email.upper(), safe='')}",
            token,
        ).json()
        assert loaded["Customer"]["Contact"]["Emails"]["ContactEmail"]["address"] == email


# ---------------------------------------------------------------------------------------------
# limits


def test_bucket_overflow_answers_429_with_lightspeed_headers_then_serves_again():
    app = make_app(products=3, limits={"bucket_size": 10}, time_scale=2)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Shop")
        statuses = []
        for _ in range(20):
            resp = get(url, token)
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                break
        # levels 1..10 fit, the 11th pushes past the size and is still allowed, the 12th is not
        assert statuses.count(200) >= 11 and statuses[-1] == 429
        assert resp.headers["X-LS-API-RateLimit-Type"] == "api-leaky-bucket"
        assert float(resp.headers["Retry-After"]) > 0
        assert resp.headers["X-LS-API-Bucket-Level"].endswith("/10")
        assert resp.json()["errorClass"] == "RateLimitedException"
        assert app.counters.throttled == 1
        time.sleep(float(resp.headers["Retry-After"]) + 0.05)
        again = get(url, token)
        assert again.status_code == 200
        level, size = again.headers["X-LS-API-Bucket-Level"].split("/")
        assert float(level) <= float(size) + 1 and again.headers["X-LS-API-Drip-Rate"] == "1"


def test_request_costs_follow_the_table():
    app = make_app(products=3)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        base = f"{server.url}/API/V3/Account/{app.tenant}"
        assert get(f"{base}/Shop.json", token).headers["X-LS-API-Request-Cost"] == "1"
        listed = get(f"{base}/Item.json?load_relations={REL_SHOPS}", token)
        assert listed.headers["X-LS-API-Request-Cost"] == "1.4"
        item_id = items_of(listed.json())[0]["itemID"]
        one = get(f"{base}/Item/{item_id}.json?load_relations={REL_SHOPS}", token)
        assert one.headers["X-LS-API-Request-Cost"] == "1.2"
        sale = requests.post(
            f"{base}/Sale.json",
            headers=bearer(token),
            timeout=10,
            json={
                "employeeID": 1,
                "registerID": 1,
                "shopID": 1,
                "completed": True,
                "SaleLines": {
                    "SaleLine": [
                        {"itemID": item_id, "unitQuantity": 1},
                        {"itemID": item_id, "unitQuantity": 2},
                    ]
                },
                "SalePayments": {"SalePayment": {"amount": "10000", "paymentTypeID": 1}},
            },
        )
        assert sale.status_code == 200, sale.text
        assert sale.headers["X-LS-API-Request-Cost"] == "6.5"  # 2 + 3 completed + 3 x 0.5
        assert sale.headers["X-LS-Acct-Id"] == app.tenant


def test_burst_limiter_is_an_optional_switch():
    app = make_app(products=3, burst_limiter=True, limits={"burst": 3})
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        codes = [get(api(server, app, "Shop"), token) for _ in range(4)]
        assert [c.status_code for c in codes[:3]] == [200, 200, 200]
        if codes[3].status_code == 429:  # a 1 s window: a slow machine may cross it
            assert codes[3].headers["X-LS-API-RateLimit-Type"] == "api-burst-limiter"
        assert codes[0].headers["X-LS-API-Burst-Level"] == "1/3"


# ---------------------------------------------------------------------------------------------
# writes


def test_lost_response_fault_leaves_the_record_created():
    app = make_app(products=3, customers=0)
    app.faults.add("lost", method="POST", path=r"/Customer\.json$", times=1)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Customer")
        body = {
            "firstName": "Lost",
            "lastName": "Answer",
            "Contact": {
                "Emails": {"ContactEmail": {"address": "lost@example.com", "useType": "Primary"}}
            },
        }
        with pytest.raises(requests.ConnectionError):
            requests.post(url, json=body, headers=bearer(token), timeout=10)
        assert app.counters.creates["customer"] == 1
        found = get(
            f"{url}?load_relations={REL_CONTACT}&Contact.email="
            f"{quote('~,lost@example.com', safe='')}",
            token,
        ).json()
        assert found["Customer"]["firstName"] == "Lost"


def test_post_item_answers_with_itemshops_and_rejects_a_duplicate_sku():
    app = make_app(products=2)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Item")
        body = {
            "description": 'Samsung 40" tv',
            "customSku": "12341234",
            "defaultCost": "0",
            "tax": "true",
            "categoryID": "1",
            "Prices": {"ItemPrice": [{"amount": "400", "useTypeID": "1", "useType": "Default"}]},
        }
        created = requests.post(url, json=body, headers=bearer(token), timeout=10)
        assert created.status_code == 200
        item = created.json()["Item"]
        assert (
            item["customSku"] == "12341234" and item["Prices"]["ItemPrice"][0]["amount"] == "400.00"
        )
        assert [s["shopID"] for s in item["ItemShops"]["ItemShop"]] == ["0", "1"]
        assert created.headers["X-LS-API-Request-Cost"] == "1.5"
        dup = requests.post(url, json=body, headers=bearer(token), timeout=10)
        assert dup.status_code == 400 and "already exists" in dup.json()["message"]


def _sale(item_id: str, **over) -> dict:
    body = {
        "employeeID": 1,
        "registerID": 1,
        "shopID": 1,
        "completed": True,
        "referenceNumber": "INV-9",
        "referenceNumberSource": "test",
        "SaleLines": {
            "SaleLine": [
                {
                    "itemID": item_id,
                    "unitQuantity": 3,
                    "unitPrice": "3.33",
                    "tax": True,
                    "taxCategoryID": 1,
                },
                {
                    "itemID": item_id,
                    "unitQuantity": 1,
                    "unitPrice": "0.05",
                    "tax": True,
                    "taxCategoryID": 2,
                },
            ]
        },
        "SalePayments": {"SalePayment": {"amount": "11.55", "paymentTypeID": 1}},
    }
    body.update(over)
    return body


def test_sale_totals_validation_and_lookup_by_reference():
    app = make_app(products=3, customers=2)
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        url = api(server, app, "Sale")
        item = next(p for p, _ in app.items())
        item_id = str(item.seq)
        stock_before = item.stock

        def post(body):
            return requests.post(url, json=body, headers=bearer(token), timeout=10)

        # 3 x 3.33 = 9.99, tax 15% = 1.4985 -> 1.50; 0.05, tax 8.25% = 0.004 -> 0.00
        short = post(
            _sale(item_id, SalePayments={"SalePayment": {"amount": "11.53", "paymentTypeID": 1}})
        )
        assert short.status_code == 400
        assert set(short.json()) == {"httpCode", "httpMessage", "message", "errorClass"}
        assert short.json()["httpCode"] == "400" and "11.54" in short.json()["message"]
        for bad in (
            {"SaleLines": {"SaleLine": {"itemID": item_id, "taxCategoryID": 77}}},
            {"SaleLines": {"SaleLine": {"itemID": 999999}}},
            {"customerID": 424242},
            {"shopID": 9},
            {"registerID": 9},
            {"employeeID": 9},
            {"SalePayments": {"SalePayment": {"amount": "100", "paymentTypeID": 99}}},
        ):
            resp = post(_sale(item_id, **bad))
            assert resp.status_code == 400, bad
            assert resp.json()["httpMessage"] == "Bad Request"
        assert app.counters.creates["invoice"] == 0
        ok = post(_sale(item_id))
        assert ok.status_code == 200, ok.text
        sale = ok.json()["Sale"]
        assert (sale["calcSubtotal"], sale["calcTax1"], sale["calcTotal"]) == (
            "10.04",
            "1.50",
            "11.54",
        )
        assert sale["change"] == "0.01" and isinstance(sale["SalePayments"]["SalePayment"], dict)
        assert item.stock == stock_before - 4  # a completed sale lowers stock on hand
        found = get(f"{url}?referenceNumber=INV-9", token).json()
        assert found["Sale"]["saleID"] == sale["saleID"]
        assert get(f"{url}?referenceNumber=INV-10", token).json().get("Sale") is None
        taxes = get(api(server, app, "TaxCategory"), token).json()["TaxCategory"]
        assert {t["tax1Name"]: Decimal(t["tax1Rate"]) for t in taxes}["GST"] == Decimal("0.15")


def test_lookup_lists_and_factory():
    app = create(products=1, customers=0, registers=3)
    assert app.bucket().size == 110 and app.bucket().drip == 2  # 3 registers: 110 at 2/s
    with serve(app) as server:
        token = app.issue_tokens()["access_token"]
        for entity, key in (
            ("Shop", "shopID"),
            ("Register", "registerID"),
            ("Employee", "employeeID"),
            ("PaymentType", "paymentTypeID"),
        ):
            body = get(api(server, app, entity), token).json()
            rows = body[entity] if isinstance(body[entity], list) else [body[entity]]
            assert all(isinstance(r[key], str) for r in rows)
        assert len(get(api(server, app, "Register"), token).json()["Register"]) == 3
