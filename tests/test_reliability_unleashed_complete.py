"""Unleashed with ``complete_orders``: a sales order that exists is completed before its job is
recorded as posted, whatever happened between the create and the Complete (issue #16, line 6).

The Unleashed simulator answers ``POST /SalesOrders/{guid}/Complete`` the way issue #16 found the
real API can (its line 15): the first call per order fails with a 500 without completing it, the
second completes it and answers with an empty body. Tests here rely on that default.

- a Complete that keeps failing for a whole run: the next run completes the order
  (test_failed_complete_is_completed_by_the_next_run);
- the CLI killed (SIGKILL) between the create and the Complete: the next run completes it
  (test_kill_between_create_and_complete_completes_the_order);
- an empty answer from ``/Complete``: the order is read back, and the job is posted in the same
  run because the order is Completed (test_empty_complete_answer_is_read_back);
- a found order the merchant deleted in Unleashed is not "posted", and is never revived
  (test_deleted_order_is_not_posted).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from hostile.support import cli_env, jsonl, kill9, orders_for, run_cli, serve, spawn, wait_for
from sqlalchemy import select, update

from synccli.sandbox import harness
from synccli.sandbox.unleashed import UnleashedSandbox, sign
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import InvoiceJob, Notification, Order
from synccli.sync.orders import add_orders

pytestmark = [pytest.mark.reliability]

SCALE = 1000.0
COMPLETE = r"/SalesOrders/[0-9a-fA-F-]+/Complete$"


@contextmanager
def unleashed(app: UnleashedSandbox | None = None) -> Iterator[harness.Running]:
    app = app or UnleashedSandbox(products=10, customers=5, time_scale=SCALE)
    with serve("unleashed", app) as running:
        try:
            yield running
        finally:
            running.stop()


def connect(store: Store, running: harness.Running, **settings: Any) -> int:
    harness.add_connection(
        store,
        "shop",
        running,
        notify_email="owner@shop.example",
        time_scale=SCALE,
        complete_orders="true",
        **settings,
    )
    conn = get_connection(store, "shop")
    add_orders(store, conn, jsonl(orders_for(running, "unleashed", 1, "UC")))
    return conn.id


def remote_orders(running: harness.Running) -> list[Any]:
    return list(running.app.world().invoices.values())


def job(store: Store) -> InvoiceJob:
    with store.session() as s:
        found = s.scalar(select(InvoiceJob))
        assert found is not None
        s.expunge(found)
        return found


def make_due(store: Store) -> None:
    """Stand in for the wait before the next attempt (and any claim a dead run left)."""
    with store.session() as s:
        s.execute(update(InvoiceJob).values(next_attempt_at=InvoiceJob.created_at))
        s.execute(update(InvoiceJob).values(claimed_until=None, claimed_by=None))


def post(cli: Any, *extra: str) -> Any:
    result = cli("post-invoices", "-c", "shop", *extra)
    assert result.exit_code in (0, 1), result.stderr
    return result


# --- the simulator's own answers ----------------------------------------------------------------
def test_simulator_fails_the_first_complete_and_answers_the_second_with_no_body() -> None:
    with unleashed() as running:
        app = running.app
        creds = app.credentials()
        world = app.world()
        customer = next(iter(world.customers.values()))
        product = next(iter(world.products.values()))
        guid = "5f0d8a52-8d1e-4a61-9c3e-2c9d5b7e6a01"
        session = requests.Session()

        def call(path: str, body: Any = None) -> requests.Response:
            headers = {
                "api-auth-id": creds["api_id"],
                "api-auth-signature": sign(creds["api_key"], ""),
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
            return session.post(running.url + path, json=body or {}, headers=headers, timeout=10)

        made = call(
            f"/SalesOrders/{guid}",
            {
                "Guid": guid,
                "OrderNumber": "SIM-1",
                "Customer": {"Guid": customer.id},
                "Tax": {"TaxCode": "G.S.T."},
                "SalesOrderLines": [
                    {"Product": {"Guid": product.id}, "OrderQuantity": 1, "UnitPrice": 10}
                ],
            },
        )
        assert made.status_code == 201, made.text
        first = call(f"/SalesOrders/{guid}/Complete")
        assert first.status_code == 500 and "Description" in first.json()
        assert world.invoices[guid].body["OrderStatus"] == "Parked"
        second = call(f"/SalesOrders/{guid}/Complete")
        assert second.status_code == 200 and second.content == b""
        assert world.invoices[guid].body["OrderStatus"] == "Completed"
        third = call(f"/SalesOrders/{guid}/Complete")  # completing again is harmless
        assert third.status_code == 200 and third.json()["OrderStatus"] == "Completed"
        changed = call(f"/SalesOrders/{guid}", {"Guid": guid, "OrderNumber": "SIM-1"})
        assert changed.status_code == 400  # a Completed order stays Completed
        assert world.invoices[guid].body["OrderStatus"] == "Completed"


# --- the product ----------------------------------------------------------------------------------
def test_empty_complete_answer_is_read_back(store: Store, cli: Any) -> None:
    """The simulator's default: a 500, then an empty 200 that did complete the order."""
    with unleashed() as running:
        connect(store, running)
        post(cli)
        [order] = remote_orders(running)
        assert order.body["OrderStatus"] == "Completed"
        assert job(store).state == "posted"
        assert job(store).remote_id == order.id


def test_failed_complete_is_completed_by_the_next_run(store: Store, cli: Any) -> None:
    with unleashed() as running:
        connect(store, running)
        running.app.faults.add("500", method="POST", path=COMPLETE)  # every call, this run
        post(cli)
        [order] = remote_orders(running)
        assert order.body["OrderStatus"] == "Parked"
        assert job(store).state != "posted"

        running.app.faults.clear()
        make_due(store)
        post(cli)
        [order] = remote_orders(running)
        assert order.body["OrderStatus"] == "Completed"
        assert job(store).state == "posted"


class HoldComplete(UnleashedSandbox):
    """The first ``/Complete`` is held until the test has killed the process that sent it; the
    dead process's request is then dropped, as if it had died before sending it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.held = 0

    def handle(self, req: Any) -> Any:
        if req.method == "POST" and req.path.endswith("/Complete") and not self.held:
            self.held += 1
            self.arrived.set()
            self.release.wait(60)
            return None  # the connection is dropped; nothing was completed
        return super().handle(req)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_between_create_and_complete_completes_the_order(
    store: Store, _isolated_env: Path
) -> None:
    app = HoldComplete(products=10, customers=5, time_scale=SCALE)
    env = cli_env(_isolated_env, SYNC_LEASE_SECONDS="0.5")
    with unleashed(app) as running:
        connect(store, running)
        product_id = next(iter(remote_product_ids(running, store)))
        stock_before = running.app.world().products[product_id].stock
        proc = spawn(["post-invoices", "-c", "shop"], env)
        try:
            assert wait_for(lambda: proc.poll() is not None or app.arrived.is_set(), 90)
            assert proc.poll() is None, proc.communicate()
            kill9(proc)
        finally:
            app.release.set()
        [order] = remote_orders(running)
        assert order.body["OrderStatus"] == "Parked"
        assert job(store).state == "posting"

        make_due(store)
        done = run_cli(["post-invoices", "-c", "shop"], env)
        assert done.returncode == 0, done.stderr
        [order] = remote_orders(running)
        assert order.body["OrderStatus"] == "Completed"
        assert job(store).state == "posted"
        # completed once: the stock left the warehouse once
        assert running.app.world().products[product_id].stock == stock_before - Decimal(
            order.body["lines"][0]["qty"]
        )


def remote_product_ids(running: harness.Running, store: Store) -> list[str]:
    with store.session() as s:
        order = s.scalar(select(Order))
        assert order is not None
        skus = [ln.sku for ln in order.lines]
    world = running.app.world()
    return [p.id for p in world.products.values() if p.code in skus]


@pytest.mark.parametrize("complete_orders", ["true", "false"])
def test_deleted_order_is_not_posted(store: Store, cli: Any, complete_orders: str) -> None:
    """The order reached Unleashed but the job never heard back; the merchant then deleted the
    order there. The look-up finds it Deleted: that is not posted, and nothing revives it."""
    with unleashed() as running:
        harness.add_connection(
            store,
            "shop",
            running,
            notify_email="owner@shop.example",
            time_scale=SCALE,
            complete_orders=complete_orders,
        )
        conn = get_connection(store, "shop")
        add_orders(store, conn, jsonl(orders_for(running, "unleashed", 1, "UD")))
        # every answer to the create is lost (the order is made), so the run ends unsure
        running.app.faults.add("lost", method="POST", path=r"/SalesOrders/[0-9a-fA-F-]+$")
        post(cli)
        running.app.faults.clear()
        [order] = remote_orders(running)
        assert job(store).state == "posting"
        order.body["OrderStatus"] = "Deleted"  # the merchant deletes it in Unleashed

        for _ in range(2):  # the look-up, then the retry on the slow schedule
            make_due(store)
            post(cli)
            assert job(store).state != "posted"
            assert [o.body["OrderStatus"] for o in remote_orders(running)] == ["Deleted"]
        assert "deleted" in (job(store).last_error or "").lower()
        with store.session() as s:
            subjects = [n.subject for n in s.scalars(select(Notification))]
        assert any("UD-0001" in subject for subject in subjects), subjects
