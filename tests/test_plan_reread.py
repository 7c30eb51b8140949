"""#21: ``plan`` counts what an Unleashed pull reads again, not only what changed since the last.

The pull starts from its cursor less 14 hours, and the cursor is the newest JSON stamp read,
which runs 13 hours behind real time (provider notes section 6; the simulator's default), so
every pull reads about 27 hours of changes again. At 40,000 products that is 3 stock pages of
1,000 a run where plan counted 1: the month cost 17.8% more than plan said. Here a busier
small shop (2,000 products, 800 product and 2,000 stock changes a day) makes the same window
span pages: a simulated day of pulls every 30 minutes against the simulator costs what plan
says within 10%, where plan's old count (one page of each a run) was a third short.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.sync import plan as planning
from synccli.sync import products
from synccli.sync.context import job_run
from synccli.sync.jobs import Job

PRODUCTS, FIELDS_A_DAY, STOCK_A_DAY = 2000, 800, 2000


@pytest.mark.slow
def test_a_day_of_unleashed_pulls_costs_what_plan_says(store: Store) -> None:
    start = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    clock = SimClock(start)
    running = harness.start("unleashed", products=PRODUCTS, customers=5, clock=clock)
    try:
        running.app.move_all_stock()  # every product has a StockOnHand row
        conn = harness.add_connection(store, "shop", running)
        cat, tenant = running.app.catalogue, running.app.tenant

        def pull() -> int:
            with job_run(store, Job.PULL_PRODUCTS, conn, clock=clock) as jc:
                jc.counts = products.pull_products(jc)
                return jc.calls

        pull()  # the first full read
        rng = random.Random(7)
        days = 2.5  # the re-read window fills up before the day that is counted
        events = sorted(
            [(rng.uniform(0, days * 86400), "fields") for _ in range(int(FIELDS_A_DAY * days))]
            + [(rng.uniform(0, days * 86400), "stock") for _ in range(int(STOCK_A_DAY * days))]
        )
        pulls = [36 * 3600 + 1800 * i for i in range(49)]  # every 30 minutes from hour 36
        calls, e = [], 0
        for at in pulls:
            while e < len(events) and events[e][0] < at:
                clock.set(start + timedelta(seconds=events[e][0]))
                if events[e][1] == "fields":
                    cat.change_prices(tenant, 1)
                else:
                    cat.change_stock(tenant, 1)
                e += 1
            clock.set(start + timedelta(seconds=at))
            calls.append(pull())
        measured = sum(calls[1:])  # 48 pulls: one day at steady state
    finally:
        running.stop()
    merchant = planning.Merchant(
        PRODUCTS,
        100,
        10,
        product_change_rate=FIELDS_A_DAY / PRODUCTS,
        stock_change_rate=STOCK_A_DAY / PRODUCTS,
    )
    schedule = [planning.Entry(Job.PULL_PRODUCTS, 48, 30)]
    planned = planning.plan("unleashed", merchant, schedule).jobs[0].calls_per_day
    assert abs(measured - planned) <= 0.1 * planned, (measured, planned, calls)
    assert measured > 2 * 48 * 1.1  # more than one page of each a run: the window spans pages
