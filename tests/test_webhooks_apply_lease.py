"""`webhooks apply` under its lease, exactly once when a process stalls (#23).

The applier takes the stream's job lease (``pull-products`` / ``link-customers``) for the moment
its work takes. A process can stall for minutes (stopped, swapped out, a provider's answer slow
to come) and wake after its lease ran out and another applier took it over: from then on it
must write nothing, or the records it read before the stall overwrite newer ones. And while its
work goes on without a stall, the lease is renewed, so no one takes it over meanwhile.

The stall is the provider's answer taking minutes (the fake's look-up, wrapped): the boundary
between this process and the world, on the shared simulated clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fakes import FakeProvider
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.store.db import Store
from synccli.store.models import RemoteCustomer as SeenCustomer
from synccli.store.models import WebhookEventRow
from synccli.store.webhooks import record_events
from synccli.sync import customers, push
from synccli.sync.context import JobContext
from synccli.webhooks.events import WebhookEvent

CLOCK = SimClock()
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def hint(store: Store, conn: Any, customer_id: str, key: str) -> None:
    """A Xero Contacts event, as the receiver stores it: the id only."""
    event = WebhookEvent(
        conn.provider, conn.id, "customers", customer_id, CLOCK.now().isoformat(), CLOCK.now(),
        None, key,
    )  # fmt: skip
    with store.session() as s:
        record_events(s, [event], received_at=CLOCK.now())


def seen_email(store: Store, customer_id: str) -> str | None:
    with store.read_session() as s:
        row = s.scalar(select(SeenCustomer).where(SeenCustomer.remote_id == customer_id))
        return row.email if row is not None else None


def open_hints(store: Store) -> int:
    with store.read_session() as s:
        return len(
            list(s.scalars(select(WebhookEventRow.id).where(WebhookEventRow.state == "hint")))
        )


def stalled_answer(fake: FakeProvider, meanwhile: Callable[[], None]) -> Callable[..., Any]:
    """A connector factory whose customer look-up is answered, then the process stalls before
    it goes on with the answer (its records as they were): ``meanwhile()`` is the world during
    the stall."""

    def factory(ctx: JobContext) -> Any:
        connector = fake.factory(ctx)
        answer = connector.get_customers

        def get_customers(ids: list[str]) -> Any:
            got = answer(ids)
            meanwhile()
            return got

        connector.get_customers = get_customers  # type: ignore[method-assign]
        return connector

    return factory


def slow_calls(fake: FakeProvider, meanwhile: Callable[[int], None]) -> Callable[..., Any]:
    """A connector factory each of whose look-up calls takes a while: ``meanwhile(n)`` runs
    as the n-th one is answered."""

    def factory(ctx: JobContext) -> Any:
        connector = fake.factory(ctx)
        http, calls = connector.http, 0
        call = http.call

        def slow(method: str, write: bool, perform: Callable[[], Any]) -> Any:
            nonlocal calls
            answer = call(method, write, perform)
            calls += 1
            meanwhile(calls)
            return answer

        http.call = slow  # type: ignore[method-assign]
        return connector

    return factory


def xero(store: Store, customers_n: int) -> tuple[FakeProvider, Any]:
    CLOCK.set(START)
    fake = FakeProvider("xero", products=0, customers=customers_n, clock=CLOCK)
    conn = fake.add_connection(store)
    with fake.run(store, "link-customers", conn, clock=CLOCK) as ctx:
        customers.link_customers(ctx)
    return fake, conn


def test_an_applier_that_stalled_past_its_lease_writes_nothing_once_another_took_over(
    any_store: Store,
) -> None:
    store = any_store
    fake, conn = xero(store, 5)
    c = next(iter(fake.world.customers.values()))
    CLOCK.advance(minutes=5)
    c.email, c.updated_at = "second@example.com", CLOCK.now()
    hint(store, conn, c.id, "first")
    others: list[push.PushReport] = []

    def stall() -> None:
        # The first applier has read "second@": it stalls past its lease. Meanwhile the
        # contact changes again, its event comes, and another applier takes the lease over
        # and stores the newer address.
        CLOCK.advance(push.APPLY_LEASE.total_seconds() * 1.5)
        c.email, c.updated_at = "third@example.com", CLOCK.now()
        hint(store, conn, c.id, "second")
        others.append(push.apply_connection(store, conn, CLOCK, fake.factory, hints=True))

    first = push.apply_connection(store, conn, CLOCK, stalled_answer(fake, stall), hints=True)
    [other] = others
    assert not other.busy and other.fetched == 1  # the lease had run out: it took it over
    assert seen_email(store, c.id) == "third@example.com"  # not put back by the stalled one
    assert first.busy and first.fetched == 0  # it wrote nothing, and says another holds it
    assert open_hints(store) == 0


def test_an_applier_that_stalled_writes_nothing_while_the_job_holds_its_lease(
    any_store: Store,
) -> None:
    """The lease taken over by the job itself (``link-customers``), still running when the
    stalled applier wakes: what the job stored is not undone."""
    import threading

    store = any_store
    fake, conn = xero(store, 5)
    c = next(iter(fake.world.customers.values()))
    CLOCK.advance(minutes=5)
    c.email, c.updated_at = "second@example.com", CLOCK.now()
    hint(store, conn, c.id, "first")
    linked, woke = threading.Event(), threading.Event()

    def job() -> None:
        with fake.run(store, "link-customers", conn, clock=CLOCK) as ctx:
            ctx.counts = customers.link_customers(ctx)  # reads "third@" in its listing
            linked.set()
            woke.wait(30)  # still running (and holding the lease) as the applier wakes

    def stall() -> None:
        CLOCK.advance(push.APPLY_LEASE.total_seconds() * 1.5)
        c.email, c.updated_at = "third@example.com", CLOCK.now()
        running.start()
        linked.wait(30)

    running = threading.Thread(target=job)
    try:
        first = push.apply_connection(store, conn, CLOCK, stalled_answer(fake, stall), hints=True)
    finally:
        woke.set()
        if running.is_alive():
            running.join(30)
    assert seen_email(store, c.id) == "third@example.com"
    assert first.busy and first.fetched == 0


def test_the_lease_is_renewed_while_the_work_goes_on(store: Store) -> None:
    """150 contacts to fetch are four look-up calls (IDs= lists of 48); each answer takes 50
    seconds, 200 in all, longer than the lease. Renewed between them, the lease is never
    free for another applier, which finds it held and leaves the work alone."""
    fake, conn = xero(store, 150)
    CLOCK.advance(minutes=5)
    for n, c in enumerate(fake.world.customers.values()):
        c.email, c.updated_at = f"new-{n}@example.com", CLOCK.now()
        hint(store, conn, c.id, f"h{n}")
    others: list[push.PushReport] = []

    def slow(n: int) -> None:
        CLOCK.advance(50)
        if n == 3:  # 150 s after the lease was taken: another applier comes
            others.append(push.apply_connection(store, conn, CLOCK, fake.factory, hints=True))

    first = push.apply_connection(store, conn, CLOCK, slow_calls(fake, slow), hints=True)
    [other] = others
    assert other.busy and other.fetched == 0
    assert first.fetched == 150 and not first.busy
    assert all(seen_email(store, c.id) == c.email for c in fake.world.customers.values())
    assert open_hints(store) == 0
