"""Issue 18, line 17: link-customers links a local customer added after its remote twin was
first seen (matched against what it has seen, without extra calls), and `customers link`
refuses a remote id never seen unless --force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Customer, Link


def _world_customers(running: harness.Running) -> list:
    world = running.app.catalogue.tenant(running.app.tenant)
    return sorted(world.customers.values(), key=lambda c: c.seq)


def _remote_id(provider: str, c) -> str:
    return str(c.seq) if provider == "lightspeed" else c.id


@pytest.mark.parametrize("provider", registry.names())
def test_a_local_customer_added_later_is_linked_to_its_seen_twin(
    cli, store: Store, provider: str
) -> None:
    with harness.start(provider, customers=4) as running:
        conn = harness.add_connection(store, "shop", running)
        for c in _world_customers(running):  # customers of long ago
            c.updated_at = c.created_at = datetime.now(UTC) - timedelta(days=3)
        first = cli("link-customers", "-c", "shop", "--json")
        assert first.exit_code == 0, first.stderr
        twin = _world_customers(running)[1]
        # one more customer at the provider now: the cursor moves past the twin, which no later
        # listing returns (the overlap re-reads only the newest)
        running.app.catalogue.add_customers(running.app.tenant, 1)
        assert cli("link-customers", "-c", "shop").exit_code == 0
        with store.session() as s:
            s.add(Customer(connection_id=conn.id, name="Late Comer", email=twin.email.upper(),
                           created_at=datetime.now(UTC)))  # fmt: skip
        again = cli("link-customers", "-c", "shop", "--json")
        quiet = cli("link-customers", "-c", "shop", "--json")  # nothing new: the same calls
    assert again.exit_code == 0, again.stderr
    import json

    made, idle = json.loads(again.stdout), json.loads(quiet.stdout)
    made = (made[0] if isinstance(made, list) else made)["report"]
    idle = (idle[0] if isinstance(idle, list) else idle)["report"]
    assert made["linked"] == 1, made
    assert made["calls"] == idle["calls"]  # no extra call to find the twin
    with store.session() as s:
        late = s.scalar(select(Customer).where(Customer.name == "Late Comer"))
        link = s.scalar(select(Link).where(Link.kind == "customer", Link.local_id == late.id))
    assert link is not None and link.remote_id == _remote_id(provider, twin)


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
