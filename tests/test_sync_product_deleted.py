"""Issue 18, line 18 (sync-product): a product deleted at the provider is deactivated and the
event recorded, as the sweep does."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Event, Link, Product


# Lightspeed never deletes an item (it archives it): see its own tests
@pytest.mark.parametrize("provider", [p for p in registry.names() if p != "lightspeed"])
def test_sync_product_deactivates_a_product_deleted_at_the_provider(
    cli, store: Store, provider: str
) -> None:
    with harness.start(provider, products=5) as running:
        harness.add_connection(store, "shop", running)
        assert cli("pull-products", "-c", "shop").exit_code == 0
        gone = running.app.catalogue.delete(running.app.tenant, 1)[0]
        sku = gone.code
        result = cli("sync-product", sku, "-c", "shop")
        trace = cli("trace", "product", sku, "-c", "shop")
    assert result.exit_code == 0, result.stderr
    assert "deleted at the provider" in result.stdout and "deactivated" in result.stdout
    with store.session() as s:
        product = s.scalar(select(Product).where(Product.sku == sku))
        assert product is not None and product.active is False
        link = s.scalar(select(Link).where(Link.local_id == product.id, Link.kind == "product"))
        assert link is not None and link.state == "ghost"
        events = list(s.scalars(select(Event).where(Event.local_id == product.id)))
        changed = [(e.old, e.new) for e in events if e.field == "active"]
        assert len(changed) == 1 and changed[0][1].lower() == "false", changed
    assert "active" in trace.stdout, trace.stdout
