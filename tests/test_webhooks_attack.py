"""#23 under attack: deliveries racing the applier, clocks that disagree, and connections that
come and go. Deliveries enter the store as the receiver stores them (``record_events``); the
provider is the fake (tests/fakes.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeProvider

from synccli.clock import SimClock
from synccli.config import load_settings
from synccli.connectors import payloads
from synccli.sandbox import data
from synccli.store.db import Store
from synccli.store.webhooks import record_events
from synccli.sync import cadence, push
from synccli.webhooks.events import WebhookEvent

CLOCK = SimClock()
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OUTLET = "b8ca3a65-0183-11e4-fbb5-2816d2677218"
FIXTURE = Path(__file__).parent / "data" / "webhooks" / "x_series_product_1_0.json"


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def _event(conn: Any, stream: str, entity: str, record: Any, version: str | None) -> WebhookEvent:
    key = f"{stream}:{entity}:{version}"
    return WebhookEvent(conn.provider, conn.id, stream, entity, version, CLOCK.now(), record, key)


def deliver(store: Store, conn: Any, stream: str, entity: str, record: Any, version: str | None,
            at: datetime | None = None) -> int:  # fmt: skip
    with store.session() as s:
        return record_events(s, [_event(conn, stream, entity, record, version)], at or CLOCK.now())


def v1_product(p: data.Product, version: int) -> dict[str, Any]:
    record = json.loads(FIXTURE.read_text())
    record.update(id=p.id, sku=p.code, name=p.name, price=float(p.price), version=version)
    record.update(updated_at=CLOCK.now().strftime("%Y-%m-%d %H:%M:%S"), inventory=[])
    return record


# --- the applier and the receiver on one SQLite store ---------------------------------------


def test_a_delivery_stored_while_the_applier_reads_its_batch_does_not_wait_for_the_lock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver (another process: its own store, here one that waits 50 ms for a lock)
    stores a delivery while the applier is reading the records of its batch. The applier held
    the write lock from its first read (BEGIN IMMEDIATE), so the receiver's insert waited behind
    the whole batch and, past its lock timeout, answered 503."""
    fake = FakeProvider("lightspeed-x", products=5, customers=1, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    products = list(fake.world.products.values())
    for p in products[:3]:
        deliver(store, conn, "products", p.id, v1_product(p, 10), "10")
    monkeypatch.setenv("SYNC_LOCK_TIMEOUT", "0.05")
    receiver_store = Store(load_settings())
    late = products[3]
    stored: list[int] = []
    real_read = payloads.read

    def read_while_a_delivery_comes(*args: Any) -> Any:
        if not stored:  # the first record of the batch: a delivery arrives now
            with receiver_store.session() as s:
                event = _event(conn, "products", late.id, v1_product(late, 11), "11")
                stored.append(record_events(s, [event], CLOCK.now()))
        return real_read(*args)

    monkeypatch.setattr(payloads, "read", read_while_a_delivery_comes)
    try:
        report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    finally:
        receiver_store.dispose()
    assert stored == [1]
    # the one that came meanwhile is applied too (by this run's next batch, or the next run)
    again = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert report.applied + again.applied == 4


# --- cadence when clocks disagree -------------------------------------------------------------


def test_a_delivery_stamped_ahead_of_this_clock_does_not_keep_the_polls_away(
    store: Store,
) -> None:
    """A receiver on a host whose clock runs 3 hours ahead stamps its deliveries 3 hours in the
    future. Counted as healthy, the stream stayed in push mode (polled only every safety_poll)
    for three hours after deliveries stopped. A stamp ahead of this clock proves nothing: every
    run polls, and status says why."""
    fake = FakeProvider("lightspeed-x", products=3, customers=1, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    p = next(iter(fake.world.products.values()))
    deliver(store, conn, "products", p.id, v1_product(p, 10), "10", at=START + timedelta(hours=3))
    with store.session() as s:
        mode = cadence.cadence(s, conn, "products", START)
    assert mode.due and not mode.push
    assert "ahead" in mode.describe(START)
    # a delivery within the window and within the clocks' slack is healthy as before
    deliver(store, conn, "stock", p.id, None, "1", at=START + timedelta(seconds=30))
    with store.session() as s:
        stock = cadence.cadence(s, conn, "stock", START)
    assert stock.push


def test_a_poll_stamped_ahead_of_this_clock_does_not_put_the_next_one_off(store: Store) -> None:
    """A pull on a host whose clock runs ahead records its poll in the future: the safety poll
    counted from it came hours late. A poll stamped ahead of this clock is due now."""
    fake = FakeProvider("lightspeed-x", products=3, customers=1, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    p = next(iter(fake.world.products.values()))
    deliver(store, conn, "products", p.id, v1_product(p, 10), "10")
    with store.session() as s:
        ahead = START + timedelta(hours=5)
        from synccli.store.push import mark_polled

        mark_polled(s, conn.id, "products", ahead, ahead)
    CLOCK.advance(hours=2, minutes=1)  # safety_poll (2h) after the real poll time
    now = CLOCK.now()
    with store.session() as s:
        deliver(store, conn, "products", p.id, v1_product(p, 11), "11")
        mode = cadence.cadence(s, conn, "products", now)
    assert mode.push and mode.due


# --- slow bodies ------------------------------------------------------------------------------


@pytest.mark.slow  # waits for the receiver to give up on a stalled request (about 10 s)
def test_a_request_that_stalls_mid_body_is_dropped_within_the_channel_timeout(
    tmp_path: Path,
) -> None:
    """A slow-loris client sends the headers and part of the body, then nothing. Waitress kept
    such a connection for its default 120 s (and by default 100 of them fill every connection
    slot, so the providers' deliveries are refused). `webhooks serve` drops it within
    CHANNEL_TIMEOUT plus one clean-up interval; a provider sends a delivery in one go, within
    its own 5-second deadline."""
    import socket
    import threading
    import time

    from synccli.store.db import Store as _Store
    from synccli.webhooks import serving
    from synccli.webhooks.app import Receiver

    bound: list[int] = []
    receiver = Receiver(_Store(load_settings()), directory_ttl=0.0)
    server = threading.Thread(
        target=serving.serve,
        kwargs={
            "application": receiver,
            "host": "127.0.0.1",
            "port": 0,
            "threads": 2,
            "body_cap": 1 << 20,
            "seconds": 30.0,
            "listening": lambda _host, port: bound.append(port),
        },
        daemon=True,
    )
    server.start()
    deadline = time.monotonic() + 10
    while not bound and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bound, "the receiver did not start"
    with socket.create_connection(("127.0.0.1", bound[0]), timeout=30) as sock:
        sock.sendall(
            b"POST /webhooks/xs/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
            b"payload="
        )
        began = time.monotonic()
        sock.settimeout(serving.CHANNEL_TIMEOUT + 2 * serving.CLEANUP_INTERVAL + 2)
        try:
            closed = sock.recv(1024) == b""
        except TimeoutError:
            closed = False
        waited = time.monotonic() - began
    assert closed, f"the stalled connection was still open after {waited:.0f} s"
    assert waited <= serving.CHANNEL_TIMEOUT + 2 * serving.CLEANUP_INTERVAL + 1


# --- a product the store never saw -----------------------------------------------------------


def test_stock_pushed_before_its_new_product_is_not_lost(store: Store) -> None:
    """X-Series sends a new product's inventory.update before its product.update (the simulator
    did: a second apart). The stock row met no linked product and was closed as applied; the
    product then came without its stock (a product.update's inventory list is not applied), so
    the shop showed no stock until the next stock poll, up to safety_poll later. A stock row
    for a product the store has not linked becomes a hint: fetched with its product."""
    from decimal import Decimal

    from sqlalchemy import select

    from synccli.store.models import Product
    from synccli.sync import products as product_job

    fake = FakeProvider("lightspeed-x", products=3, customers=1, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    with fake.run(store, "pull-products", conn, clock=CLOCK) as ctx:
        ctx.counts = product_job.pull_products(ctx)
    CLOCK.advance(minutes=5)
    new = fake.catalogue.gen.add_product(fake.world, code="NEW-1", name="New one")
    new.stock = Decimal(7)
    inventory = {"product_id": new.id, "outlet_id": OUTLET, "count": "7.00000"}
    deliver(store, conn, "stock", new.id, inventory, None)
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    CLOCK.advance(seconds=1)
    deliver(store, conn, "products", new.id, v1_product(new, 20), "20")
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory, hints=True)
    with store.read_session() as s:
        made = s.scalar(select(Product).where(Product.sku == "NEW-1"))
    assert made is not None
    assert made.stock == Decimal(7)


# --- connections that come and go ---------------------------------------------------------------


def test_a_delivery_for_a_removed_connection_is_never_stored_under_the_one_that_took_its_id(
    store: Store,
) -> None:
    """The receiver keeps the connections it knows for a few seconds. A connection removed and
    another added at once took the removed one's id (SQLite reuses the highest), and a delivery
    still sent to the removed connection's URL, with its token, was stored as the new
    connection's and applied to the new merchant's products. The receiver checks, in the
    transaction that stores a delivery, that the connection it verified it for is still there."""
    import io

    from sqlalchemy import func, select

    from synccli.store.connections import add_connection, remove_connection
    from synccli.store.models import WebhookEventRow
    from synccli.webhooks.app import Receiver

    token = "old-token-0123456789abcdef0123456789abcdef"
    creds = {"client_secret": "pt" * 8, "webhook_key": token}
    old = add_connection(store, "old", "lightspeed-x", {"grant": "personal_token"}, creds)
    app = Receiver(store, clock=SimClock(START), directory_ttl=60.0)

    def send(version: int) -> int:
        record = {"id": "p1", "sku": "S1", "name": "n", "price": 1.0, "version": version}
        body = f"type=product.update&payload={json.dumps(record)}".encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/webhooks/old/{token}",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        seen: list[int] = []
        list(app(environ, lambda status, _headers: seen.append(int(status.split()[0]))))
        return seen[0]

    assert send(1) == 200
    remove_connection(store, "old")
    other = {"client_secret": "other-secret-xyz", "webhook_key": "new-token-" + "9" * 30}
    new = add_connection(store, "new", "lightspeed-x", {"grant": "personal_token"}, other)
    assert new.id == old.id  # the id is taken again: what made the mix-up possible
    assert send(2) == 404
    with store.read_session() as s:
        theirs = select(func.count()).where(WebhookEventRow.connection_id == new.id)
        assert s.scalar(theirs) == 0


# --- a stock level that comes back to an earlier one ----------------------------------------------


def test_stock_that_returns_to_an_earlier_level_is_not_taken_for_a_retry(store: Store) -> None:
    """An X-Series inventory.update carries no version and no time of its own, so a delivery is
    known by its whole payload. Stock going 10 -> 7 -> 10 sends the first payload again, which
    was stored as a retry of the first (nothing new) and dropped: the shop showed 7 until the
    next stock poll, up to safety_poll later. Where the earlier copy has been applied already,
    the same payload again cannot tell a retry from a change back: it is fetched (a hint). A
    retry of a copy not applied yet is still stored once."""
    import io
    from decimal import Decimal
    from urllib.parse import urlencode

    from sqlalchemy import func, select

    from synccli.store.connections import set_values
    from synccli.store.models import Product, WebhookEventRow
    from synccli.sync import products as product_job
    from synccli.webhooks.app import Receiver

    fake = FakeProvider("lightspeed-x", products=3, customers=1, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    token = "stock-token-0123456789abcdef0123456789"
    set_values(store, conn.name, {"webhook_key": token})
    with fake.run(store, "pull-products", conn, clock=CLOCK) as ctx:
        ctx.counts = product_job.pull_products(ctx)
    p = next(iter(fake.world.products.values()))
    app = Receiver(store, clock=CLOCK, directory_ttl=0.0)

    def send(count: int) -> int:
        record = {"product_id": p.id, "outlet_id": OUTLET, "count": f"{count}.00000"}
        body = urlencode({"payload": json.dumps(record), "type": "inventory.update"}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/webhooks/{conn.name}/{token}",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        seen: list[int] = []
        list(app(environ, lambda status, _headers: seen.append(int(status.split()[0]))))
        return seen[0]

    def stock() -> Decimal | None:
        with store.read_session() as s:
            return s.scalar(select(Product.stock).where(Product.sku == p.code))

    def rows() -> int:
        with store.read_session() as s:
            return s.scalar(select(func.count()).select_from(WebhookEventRow)) or 0

    CLOCK.advance(minutes=5)
    assert send(10) == 200 and send(10) == 200  # a retry before it is applied: stored once
    assert rows() == 1
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert stock() == Decimal(10)
    CLOCK.advance(minutes=1)
    send(7)
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert stock() == Decimal(7)
    CLOCK.advance(minutes=1)
    p.stock = Decimal(10)  # back where it was at the provider
    assert send(10) == 200
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory, hints=True)
    assert stock() == Decimal(10)


# --- webhooks apply --dry-run ------------------------------------------------------------------


def test_webhooks_apply_dry_run_says_what_it_would_apply_and_writes_nothing(
    cli: Any, store: Store
) -> None:
    """Every command that writes takes --dry-run (README, Commands); `webhooks apply` writes
    products and closes deliveries, and had none (exit 2, no such option)."""
    from decimal import Decimal

    from sqlalchemy import select

    from synccli.store.connections import add_connection
    from synccli.store.models import Lease, Product, WebhookEventRow

    token = {"domain_prefix": "shop", "grant": "personal_token", "outlet_id": OUTLET}
    conn = add_connection(store, "shop", "lightspeed-x", token, {"client_secret": "pt-1234"})
    record = json.loads(FIXTURE.read_text())
    deliver(store, conn, "products", record["id"], record, None)
    out = cli("webhooks", "apply", "-c", "shop", "--dry-run", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["shop"]["applied"] == 1
    with store.read_session() as s:
        assert s.scalar(select(Product).where(Product.sku == "1000000")) is None
        assert list(s.scalars(select(WebhookEventRow.state))) == ["pending"]
        assert s.scalar(select(Lease)) is None
    out = cli("webhooks", "apply", "-c", "shop")
    assert out.exit_code == 0 and "applied 1" in out.stdout
    with store.read_session() as s:
        made = s.scalar(select(Product.price).where(Product.sku == "1000000"))
    assert made == Decimal("675.65")


def test_webhooks_subscribe_dry_run_registers_nothing_and_stores_no_token(
    cli: Any, store: Store, tmp_path: Path
) -> None:
    """`webhooks subscribe` writes (a URL token, a file holding the URL, subscriptions at the
    provider) and had no --dry-run (exit 2). It says what it would register, calling nothing
    (the X-Series address here answers nothing) and storing nothing."""
    from synccli.config import load_settings as settings_now
    from synccli.store.connections import add_connection, credentials, get_connection

    dead = {"domain_prefix": "shop", "grant": "personal_token", "base_url": "http://127.0.0.1:9"}
    add_connection(store, "pos", "lightspeed-x", dead, {"client_secret": "pt-1234"})
    add_connection(store, "stock", "unleashed", {"api_id": "id-1"}, {"api_key": "k" * 12})
    out = cli("webhooks", "subscribe", "-c", "pos", "--url", "https://hooks.shop.example",
              "--dry-run", "--json")  # fmt: skip
    assert out.exit_code == 0, out.stderr
    planned = json.loads(out.stdout)
    assert planned["planned"] == ["product.update", "inventory.update", "customer.update",
                                  "sale.update"]  # fmt: skip
    assert planned["created"] == [] and "***" in planned["endpoint"]
    out = cli("webhooks", "subscribe", "-c", "stock", "--url", "https://hooks.shop.example",
              "--dry-run")  # fmt: skip
    assert out.exit_code == 0, out.stderr
    assert "dry run" in out.stdout
    for name in ("pos", "stock"):
        assert "webhook_key" not in credentials(store, get_connection(store, name))
    assert not list(Path(settings_now().data_dir).glob("webhook-url-*"))


# --- a flood of requests that do not verify ----------------------------------------------------


def test_a_flood_of_bad_tokens_costs_the_store_a_few_writes_a_second_not_one_each(
    store: Store,
) -> None:
    """Anyone can send requests with a wrong token. Each was counted (`rejected`) in a write
    transaction of its own: 200 of them took SQLite's one write lock 200 times, which the
    providers' real deliveries queue behind. They are counted in memory and written together, at
    most five transactions a second (and with the next delivery stored); none is lost from the
    count."""
    import io

    from sqlalchemy import event

    from synccli.store.connections import add_connection
    from synccli.store.webhooks import webhook_stats
    from synccli.webhooks.app import Receiver

    token = "good-token-0123456789abcdef0123456789ab"
    creds = {"client_secret": "pt" * 8, "webhook_key": token}
    conn = add_connection(store, "xs", "lightspeed-x", {"grant": "personal_token"}, creds)
    app = Receiver(store, clock=SimClock(START), directory_ttl=60.0)

    def send(path_token: str, version: int) -> int:
        record = {"id": "p1", "sku": "S1", "name": "n", "price": 1.0, "version": version}
        body = f"type=product.update&payload={json.dumps(record)}".encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/webhooks/xs/{path_token}",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        seen: list[int] = []
        list(app(environ, lambda status, _headers: seen.append(int(status.split()[0]))))
        return seen[0]

    send(token, 1)  # the directory is read, and a first delivery stored
    writes: list[str] = []
    event.listen(store.engine, "commit", lambda _conn: writes.append("commit"))
    assert all(send("wrong-" + str(n), 2) == 401 for n in range(200))
    assert len(writes) <= 2 * 5 + 1  # the first five of each second (a slow machine: two)
    assert send(token, 3) == 200
    with store.read_session() as s:
        assert webhook_stats(s, conn.id, START).rejected_today == 200
