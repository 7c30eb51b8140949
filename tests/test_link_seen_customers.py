"""Issue 18, line 17: link-customers links a local customer added after its remote twin was
first seen (matched against what it has seen, without extra calls), and `customers link`
refuses a remote id never seen unless --force. The job's logic runs against the fake provider
(tests/fakes.py), lent each provider's capabilities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes import FakeProvider
from sqlalchemy import select

from synccli import registry
from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Customer, Link
from synccli.sync import customers


def _world_customers(running: harness.Running) -> list:
    world = running.app.catalogue.tenant(running.app.tenant)
    return sorted(world.customers.values(), key=lambda c: c.seq)


def _link(store: Store, conn, fake: FakeProvider) -> customers.LinkReport:
    with fake.run(store, customers.JOB, conn) as jc:
        report = customers.link_customers(jc)
        jc.counts = report
    return report


@pytest.mark.parametrize("provider", registry.names())
def test_a_local_customer_added_later_is_linked_to_its_seen_twin(
    store: Store, provider: str
) -> None:
    clock = SimClock(datetime.now(UTC))
    fake = FakeProvider(provider, customers=4, clock=clock)
    conn = fake.add_connection(store)
    world = sorted(fake.world.customers.values(), key=lambda c: c.seq)
    for c in world:  # customers of long ago
        c.updated_at = c.created_at = clock.now() - timedelta(days=3)
    _link(store, conn, fake)
    twin = world[1]
    # one more customer at the provider now: the cursor moves past the twin, which no later
    # listing returns (the overlap re-reads only the newest)
    clock.advance(minutes=1)
    fake.catalogue.add_customers(fake.tenant, 1)
    _link(store, conn, fake)
    with store.session() as s:
        s.add(Customer(connection_id=conn.id, name="Late Comer", email=twin.email.upper(),
                       created_at=clock.now()))  # fmt: skip
    clock.advance(minutes=1)
    made = _link(store, conn, fake)
    idle = _link(store, conn, fake)  # nothing new: the same calls
    assert made.linked == 1, made
    assert made.calls == idle.calls  # no extra call to find the twin
    with store.session() as s:
        late = s.scalar(select(Customer).where(Customer.name == "Late Comer"))
        link = s.scalar(select(Link).where(Link.kind == "customer", Link.local_id == late.id))
    assert link is not None and link.remote_id == twin.id


def test_customers_link_refuses_a_remote_id_never_seen_unless_forced(cli, store: Store) -> None:
    with harness.start("xero", customers=2) as running:
        conn = harness.add_connection(store, "shop", running)
        assert cli("link-customers", "-c", "shop").exit_code == 0
        with store.session() as s:
            s.add(Customer(connection_id=conn.id, name="Walk In", email="walk@in.example",
                           created_at=datetime.now(UTC)))  # fmt: skip
        typo = "00000000-0000-0000-0000-00000000abcd"
        refused = cli("customers", "link", "-c", "shop", "walk@in.example", typo)
        assert refused.exit_code == 2, refused.stdout + refused.stderr
        assert typo in refused.stderr and "--force" in refused.stderr
        forced = cli("customers", "link", "-c", "shop", "walk@in.example", typo, "--force")
        assert forced.exit_code == 0, forced.stderr
        seen = _world_customers(running)[0].id
        cli("customers", "unlink", "-c", "shop", "walk@in.example")
        ok = cli("customers", "link", "-c", "shop", "walk@in.example", seen)
    assert ok.exit_code == 0, ok.stderr
