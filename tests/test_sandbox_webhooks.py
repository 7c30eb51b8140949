"""#23: the simulators push signed webhooks to a URL registered on loopback, in each provider's
format, with its retries, a share dropped on demand, and never from inside a request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.unleashed import sign as unleashed_sign
from synccli.sandbox.webhooks import backoff, wsgi_transport

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Receiver:
    """A tiny WSGI receiver: records every POST; answers from a script (default 200, no body)."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.script: list[Any] = []  # status codes or ("sleep", seconds) per request, in turn
        self.check: Any = None  # (headers, body) -> status, for signature checks
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k[:5] == "HTTP_"
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        with self.lock:
            self.got.append({"path": environ["PATH_INFO"], "headers": headers, "body": body})
            step = self.script.pop(0) if self.script else 200
        if isinstance(step, tuple):
            time.sleep(step[1])
            step = 200
        if self.check is not None:
            step = self.check(headers, body)
        start_response(f"{step} X", [("Content-Length", "0")])
        return [b""]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    httpd = make_server("127.0.0.1", 0, rec, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{httpd.server_address[1]}/webhooks/shop"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _lsx(clock: SimClock, **kw: Any) -> harness.Running:
    return harness.start("lightspeed-x", seed=3, products=5, customers=3, clock=clock, **kw)


def _lsx_register(running: harness.Running, url: str, kind: str = "product.update") -> Any:
    token = running.app.issue_tokens()["access_token"]
    return requests.post(
        f"{running.url}/api/2026-07/webhooks",
        json={"active": True, "type": kind, "url": url},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


# --- Lightspeed X-Series --------------------------------------------------------------------------
def test_x_series_registers_by_api_and_refuses_a_duplicate_type_and_url(receiver: Any) -> None:
    rec, url = receiver
    with _lsx(SimClock(T0), deliveries="manual") as running:
        first = _lsx_register(running, url)
        assert first.status_code == 201
        assert first.json()["data"]["type"] == "product.update"
        assert _lsx_register(running, url).status_code == 409  # [SPEC] same type and URL
        assert _lsx_register(running, url, "inventory.update").status_code == 201
        token = running.app.issue_tokens()["access_token"]
        bad = requests.post(
            f"{running.url}/api/2026-07/webhooks",
            json={"type": "product.update", "url": url},  # active missing
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert bad.status_code == 400
        listed = requests.get(
            f"{running.url}/api/2026-07/webhooks",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        ).json()["data"]
        assert sorted(w["type"] for w in listed) == ["inventory.update", "product.update"]
        elsewhere = _lsx_register(running, "https://example.com/hook", "customer.update")
        assert elsewhere.status_code == 400  # the sandbox never sends off this machine


def test_x_series_sends_the_changed_product_form_encoded_and_signed(receiver: Any) -> None:
    rec, url = receiver
    clock = SimClock(T0)
    with _lsx(clock, deliveries="manual") as running:
        app = running.app
        assert _lsx_register(running, url).status_code == 201
        product = app.catalogue.change_prices(app.tenant, 1)[0]
        assert app.webhooks.pump(T0) == 0  # not yet: a modelled delay after the change
        clock.advance(60)
        assert app.webhooks.pump() == 1
    (got,) = rec.got
    assert got["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    form = parse_qs(got["body"].decode("utf-8"))
    payload = json.loads(form["payload"][0])  # the API 1.0 shape of the product
    assert payload["id"] == product.id and payload["sku"] == product.code
    assert payload["price"] == float(product.price)
    assert "type" not in form  # not guaranteed by the docs, so not sent
    signature, algorithm = got["headers"]["x-signature"].split(",")
    assert algorithm == "algorithm=HMAC-SHA256"
    secret = app.clients["synccli-x-sandbox-client"].encode()
    assert signature == "signature=" + hmac.new(secret, got["body"], hashlib.sha256).hexdigest()


def test_x_series_sends_stock_as_inventory_update_only_to_that_subscription(receiver: Any) -> None:
    rec, url = receiver
    clock = SimClock(T0)
    with _lsx(clock, deliveries="manual") as running:
        app = running.app
        _lsx_register(running, url, "inventory.update")
        moved = app.catalogue.change_stock(app.tenant, 1)[0]
        app.catalogue.change_prices(app.tenant, 1)  # product.update: nobody subscribed
        clock.advance(60)
        assert app.webhooks.pump() == 1
    payload = json.loads(parse_qs(rec.got[0]["body"].decode())["payload"][0])
    assert payload["product_id"] == moved.id
    assert float(payload["count"]) == float(moved.stock)


def test_x_series_retries_a_failed_delivery_with_backoff_up_to_20_times() -> None:
    clock = SimClock(T0)
    seen: list[datetime] = []

    def down(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(clock.now())
        start_response("503 Down", [])
        return [b""]

    with _lsx(clock, deliveries="manual") as running:
        app = running.app
        app.webhooks.transport = wsgi_transport(down)
        _lsx_register(running, "http://127.0.0.1:9/webhooks/shop")
        app.catalogue.change_prices(app.tenant, 1)
        while (due := app.webhooks.next_due()) is not None:
            clock.set(due)
            app.webhooks.pump()
    assert len(seen) == 21  # the first attempt and 20 retries [D-WH]
    span = seen[-1] - seen[0]
    assert timedelta(hours=47) <= span <= timedelta(hours=49)  # "over 48h"
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert gaps[1] >= gaps[0] * 2 * 0.99  # exponential back-off
    assert app.webhooks.stats["gave_up"] == 1


def test_a_late_answer_is_a_failure_and_is_retried(receiver: Any) -> None:
    rec, url = receiver
    clock = SimClock(T0)
    with _lsx(clock, deliveries="manual") as running:
        app = running.app
        app.webhooks.deadline = 0.2  # the 5 seconds, shortened for the test
        rec.script = [("sleep", 0.5)]
        _lsx_register(running, url)
        app.catalogue.change_descriptions(app.tenant, 1)
        clock.advance(15)  # the first attempt is due, its retry (30 s later) not yet
        app.webhooks.pump()
        assert app.webhooks.stats["delivered"] == 0
        time.sleep(0.4)  # the receiver finishes its slow answer, which came too late
        clock.set(app.webhooks.next_due() or T0)
        app.webhooks.pump()
    assert app.webhooks.stats["delivered"] == 1
    assert len(rec.got) == 2 and rec.got[0]["body"] == rec.got[1]["body"]  # the same delivery


def test_dropped_deliveries_never_leave_the_sandbox() -> None:
    clock = SimClock(T0)
    sent: list[bytes] = []

    def keep(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        sent.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return []

    with _lsx(clock, deliveries="manual", faults="drop:0.5@:product") as running:
        app = running.app
        app.webhooks.transport = wsgi_transport(keep)
        _lsx_register(running, "http://127.0.0.1:9/webhooks/shop")
        for _ in range(40):
            app.catalogue.change_prices(app.tenant, 1)
            clock.advance(600)
            app.webhooks.pump()
    stats = app.webhooks.stats
    assert stats["dropped"] + stats["delivered"] == 40
    assert 8 <= stats["dropped"] <= 32 and len(sent) == stats["delivered"]
    assert app.faults.fired["drop"] == stats["dropped"]


def test_the_sender_thread_never_holds_up_the_api(receiver: Any) -> None:
    rec, url = receiver
    with harness.start("lightspeed-x", seed=3, products=5, customers=3) as running:
        app = running.app
        app.webhooks.deadline = 5.0
        rec.script = [("sleep", 1.5)] * 3  # a receiver that takes its time
        _lsx_register(running, url)
        app.catalogue.change_prices(app.tenant, 3)
        time.sleep(0.3)  # the sender is now waiting on the receiver
        token = app.issue_tokens()["access_token"]
        started = time.monotonic()
        resp = requests.get(
            f"{running.url}/api/2026-07/products",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert resp.status_code == 200
        assert time.monotonic() - started < 1.0
        deadline = time.monotonic() + 10
        while app.webhooks.stats["delivered"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert app.webhooks.stats["delivered"] >= 1


# --- Xero -----------------------------------------------------------------------------------------
def _xero_check(key: str) -> Any:
    def check(headers: dict[str, str], body: bytes) -> int:
        good = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
        return 200 if hmac.compare_digest(good, headers.get("x-xero-signature", "")) else 401

    return check


def test_xero_checks_intent_to_receive_then_sends_signed_contact_events(receiver: Any) -> None:
    rec, url = receiver
    clock = SimClock(T0)
    with harness.start("xero", seed=3, products=5, customers=3, clock=clock) as running:
        running.app.webhooks.stop()
        app = running.app
        made = requests.post(f"{running.url}/sandbox/webhooks", json={"url": url}, timeout=5)
        assert made.status_code == 201 and made.json()["status"] == "PENDING"
        key = made.json()["key"]
        rec.check = _xero_check(key)
        app.webhooks.pump()
        hook = requests.get(f"{running.url}/sandbox/webhooks/{made.json()['id']}", timeout=5)
        assert hook.json()["status"] == "OK"
        intent = [json.loads(g["body"]) for g in rec.got]
        assert intent and all(doc["events"] == [] for doc in intent)
        rec.got.clear()
        added = app.catalogue.add_customers(app.tenant, 1)[0]
        app.catalogue.change_prices(app.tenant, 2)  # Items: no webhook at Xero
        clock.advance(60)
        app.webhooks.pump()
    (got,) = rec.got
    (event,) = json.loads(got["body"])["events"]
    assert event["eventCategory"] == "CONTACT" and event["eventType"] == "CREATE"
    assert event["resourceId"] == added.id and event["tenantId"] == app.tenant


def test_xero_refuses_a_receiver_that_accepts_a_bad_signature(receiver: Any) -> None:
    rec, url = receiver  # answers 200 to everything
    clock = SimClock(T0)
    with harness.start("xero", seed=3, products=5, customers=3, clock=clock) as running:
        running.app.webhooks.stop()
        made = requests.post(f"{running.url}/sandbox/webhooks", json={"url": url}, timeout=5)
        running.app.webhooks.pump()
        hook = requests.get(f"{running.url}/sandbox/webhooks/{made.json()['id']}", timeout=5)
        assert hook.json()["status"] == "INTENT_FAILED"
        running.app.catalogue.add_customers(running.app.tenant, 1)
        clock.advance(60)
        running.app.webhooks.pump()
    assert all(json.loads(g["body"])["events"] == [] for g in rec.got)  # no event was sent


def test_xero_disables_a_webhook_failing_for_24_hours() -> None:
    clock = SimClock(T0)
    answers = {"ok": True}

    def flaky(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK" if answers["ok"] else "500 No", [])
        return [b""]

    with harness.start("xero", seed=3, products=5, customers=3, clock=clock) as running:
        app = running.app
        app.webhooks.stop()
        app.webhooks.transport = wsgi_transport(flaky)
        sub = app.webhooks.subscribe("http://127.0.0.1:9/x", ["CONTACT"], "k", app.tenant)
        answers["ok"] = False
        app.catalogue.add_customers(app.tenant, 1)
        while (due := app.webhooks.next_due()) is not None:
            clock.set(due)
            app.webhooks.pump()
    assert sub.status == "DISABLED"
    assert app.webhooks.stats["disabled"] == 1
    assert clock.now() - T0 >= timedelta(hours=24)


# --- Unleashed ------------------------------------------------------------------------------------
def _unleashed_post(running: harness.Running, body: dict[str, Any]) -> Any:
    creds = running.app.credentials()
    return requests.post(
        f"{running.url}/webhooks/subscriptions",
        json=body,
        headers={
            "api-auth-id": creds["api_id"],
            "api-auth-signature": unleashed_sign(creds["api_key"], ""),
            "Accept": "application/json",
            "client-type": "synccli/tests",
        },
        timeout=5,
    )


def test_unleashed_signs_timestamp_and_body_and_allows_five_subscriptions(receiver: Any) -> None:
    rec, url = receiver
    clock = SimClock(T0)
    with harness.start("unleashed", seed=3, products=5, customers=3, clock=clock) as running:
        app = running.app
        app.webhooks.stop()
        kinds = ["product.updated", "customer.created"]
        made = _unleashed_post(running, {"notificationUrl": url, "eventTypes": kinds})
        assert made.status_code == 201
        key = made.json()["signatureKey"]
        for i in range(4):
            extra = {"notificationUrl": f"{url}?n={i}", "eventTypes": ["product.deleted"]}
            assert _unleashed_post(running, extra).status_code == 201
        sixth = _unleashed_post(running, {"notificationUrl": url, "eventTypes": kinds})
        assert sixth.status_code == 400  # at most 5 an account [D-WH]
        changed = app.catalogue.change_prices(app.tenant, 1)[0]
        app.catalogue.change_stock(app.tenant, 3)  # stock on hand raises no event
        clock.advance(60)
        app.webhooks.pump()
    (got,) = [g for g in rec.got if g["path"] == "/webhooks/shop" and b"product" in g["body"]]
    doc = json.loads(got["body"])
    assert doc["eventType"] == "product.updated"
    assert json.loads(doc["data"])["Guid"] == changed.id  # the id only: the record is fetched
    stamp = got["headers"]["x-unleashed-timestamp"]
    message = stamp.encode() + b"." + got["body"]
    good = base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()
    assert got["headers"]["x-unleashed-signature"] == good
    assert abs(int(stamp) - clock.now().timestamp()) < 120  # signed on the sandbox's clock


def test_retry_delays_add_up_as_documented() -> None:
    delays = backoff(30.0, 20, 48 * 3600.0)
    assert len(delays) == 20 and abs(sum(delays) - 48 * 3600) < 5
    assert delays[0] == 30.0 and list(delays) == sorted(delays)
