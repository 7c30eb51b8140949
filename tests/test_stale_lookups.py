"""post-invoices never writes its look-up of a product over a newer read a pull linked meanwhile.

post-invoices links an order line's product from its own look-up (``find_product`` by the
line's code, or the answer to a create), made with no transaction open. Were it to stall between
that look-up and its write (SIGSTOP, a long Retry-After, a paused VM), a pull could read the
product meanwhile, link it to the same local product and then store a later read of it (a new
code at the provider, a ghost flag). The stalled run's older copy must not undo that: the link
keeps the read the store holds (``links.read_at``), and the invoice names the item by the code
the store has for it.

The stall is the one of tests/test_job_lease_fence.py: the provider answers the look-up (a copy
of the record as it is then), and the process stops before it goes on with it. Nothing of ours
is patched.

- a pull linked the product and stored its new code during the stall:
  test_a_stalled_look_up_leaves_a_newer_pull_in_place
- the same after a create (the product was new at the provider), the merchant still told of it:
  test_a_stalled_create_leaves_a_newer_pull_in_place
- the guard: a link older than the look-up (a ghost, the product found again) is linked from the
  look-up as before: test_a_look_up_newer_than_the_link_still_relinks_it
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeProvider
from sqlalchemy import select
from test_invoices import TAX, order_json
from test_job_lease_fence import (
    CLOCK,
    START,
    last_run,
    local,
    pull,
    run_job,
    stalled_after_first_answer,
)
from test_stale_reads import sweeper

from synccli import registry
from synccli.store.db import Store
from synccli.store.models import Connection, Link, ReviewItem
from synccli.sync import invoices
from synccli.sync.context import JobContext
from synccli.sync.orders import add_orders


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def post(ctx: JobContext) -> invoices.PostReport:
    return invoices.post_invoices(ctx)


def order_for(store: Store, fake: FakeProvider, conn: Connection, sku: str, name: str) -> None:
    """One order (WEB-1) of product ``sku`` by one of the provider's customers."""
    c = sorted(fake.world.customers.values(), key=lambda x: x.code)[0]
    customer = {"email": c.email or "", "account_number": c.account_number or "", "name": c.name}
    order = order_json("WEB-1", customer, [(sku, name, 1, "10.00")], TAX[fake.provider])
    assert add_orders(store, conn, json.dumps(order) + "\n", now=CLOCK.now()).added == 1


def link_of(store: Store, remote_id: str) -> dict[str, Any]:
    with store.read_session() as s:
        link = s.scalar(select(Link).where(Link.kind == "product", Link.remote_id == remote_id))
        assert link is not None
        return {
            "local_id": link.local_id,
            "remote_code": link.remote_code,
            "state": link.state,
            "read_at": link.read_at,
            "last_synced_at": link.last_synced_at,
            "fingerprint": link.fingerprint,
        }


def product_of(store: Store, sku: str) -> tuple[Any, ...]:
    p = local(store, sku)
    return p.id, p.sku, p.name, p.price, p.stock, p.active, p.updated_at


def posted_codes(fake: FakeProvider, number: str) -> list[str]:
    """The item codes the provider's invoice ``number`` names, line by line."""
    found = [inv for inv in fake.world.invoices.values() if inv.number == number]
    assert len(found) == 1, f"invoice {number} posted {len(found)} times"
    return [ln.code for ln in found[0].body["draft"].lines]


@pytest.mark.parametrize("provider", registry.suite_names())
def test_a_stalled_look_up_leaves_a_newer_pull_in_place(any_store: Store, provider: str) -> None:
    store = any_store
    fake = FakeProvider(provider, products=12, customers=3, clock=CLOCK, page_size=12)
    conn = fake.add_connection(store)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    sku = p.code  # what the order says, and what the look-up finds the product by
    order_for(store, fake, conn, p.code, p.name)
    pulled: dict[str, Any] = {}

    def meanwhile() -> None:
        CLOCK.advance(minutes=1)
        run_job(store, "pull-products", conn, fake.factory, pull)  # links the product as found
        CLOCK.advance(minutes=1)
        p.code, p.updated_at = "NEW-CODE", CLOCK.now()  # re-coded at the provider
        run_job(store, "pull-products", conn, fake.factory, pull)  # stored with the new code
        pulled.update(link=link_of(store, p.id), product=product_of(store, sku))
        CLOCK.advance(minutes=1)  # still stalled

    report = run_job(
        store,
        invoices.JOB,
        conn,
        stalled_after_first_answer(fake, meanwhile, "find_product"),
        post,
    )
    assert pulled, "the stall came"
    assert pulled["link"]["remote_code"] == "NEW-CODE"
    assert pulled["link"]["local_id"] == pulled["product"][0]
    # the link and the product as the pull left them: no older code, stamp or state
    assert link_of(store, p.id) == pulled["link"]
    assert product_of(store, sku) == pulled["product"]
    # the invoice names the item by its code at the provider now
    assert report.posted == 1
    assert posted_codes(fake, "WEB-1") == ["NEW-CODE"]
    assert last_run(store, invoices.JOB).outcome == "ok"


def test_a_stalled_create_leaves_a_newer_pull_in_place(any_store: Store) -> None:
    """The order's product is new: post-invoices creates it, and stalls with the answer while a
    pull finds the product, links it and then stores its new code."""
    store = any_store
    fake = FakeProvider("unleashed", products=12, customers=3, clock=CLOCK, page_size=20)
    conn = fake.add_connection(store)
    order_for(store, fake, conn, "NEW-1", "New product")
    pulled: dict[str, Any] = {}

    def meanwhile() -> None:
        made = fake.product("NEW-1")
        assert made is not None
        CLOCK.advance(minutes=1)
        run_job(store, "pull-products", conn, fake.factory, pull)
        CLOCK.advance(minutes=1)
        made.code, made.updated_at = "NEW-1-B", CLOCK.now()
        run_job(store, "pull-products", conn, fake.factory, pull)
        pulled.update(id=made.id, link=link_of(store, made.id))
        CLOCK.advance(minutes=1)

    report = run_job(
        store,
        invoices.JOB,
        conn,
        stalled_after_first_answer(fake, meanwhile, "create_product"),
        post,
    )
    assert pulled, "the stall came"
    after = link_of(store, pulled["id"])
    assert after["remote_code"] == "NEW-1-B"
    assert after == pulled["link"]
    assert report.posted == 1 and fake.calls["create_product"] == 1
    assert posted_codes(fake, "WEB-1") == ["NEW-1-B"]
    with store.read_session() as s:
        origin = s.scalar(select(Link.origin).where(Link.remote_id == pulled["id"]))
        reviews = list(
            s.scalars(select(ReviewItem.subject).where(ReviewItem.kind == "created_product"))
        )
    assert origin == "created"  # ours, though the pull found it first
    assert reviews == ["NEW-1"]  # the merchant hears of the product made for the order


def test_a_look_up_newer_than_the_link_still_relinks_it(any_store: Store) -> None:
    """The product's link is a ghost (gone at the provider when a sweep looked), and the product
    is back under its id: the look-up, newer than anything the store read of it, links it again
    as before."""
    store = any_store
    fake = FakeProvider("lightspeed", products=12, customers=3, clock=CLOCK, page_size=12)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    del fake.world.products[p.id]
    fake.world.deleted_products.add(p.id)
    CLOCK.advance(minutes=30)
    run_job(store, "sweep-oldest", conn, fake.factory, sweeper(12))
    assert link_of(store, p.id)["state"] == "ghost"
    CLOCK.advance(minutes=30)
    fake.world.deleted_products.discard(p.id)
    fake.world.products[p.id] = p
    order_for(store, fake, conn, p.code, p.name)
    before = link_of(store, p.id)

    report = run_job(store, invoices.JOB, conn, fake.factory, post)

    after = link_of(store, p.id)
    assert report.posted == 1
    assert posted_codes(fake, "WEB-1") == [p.code]
    assert after["state"] == "linked"
    assert after["remote_code"] == p.code
    assert after["local_id"] == before["local_id"]
    assert after["last_synced_at"] == CLOCK.now()
    assert after["fingerprint"] is None  # compared in full by the next pull
    assert fake.calls["find_product"] == 1 and fake.calls["create_product"] == 0
