"""A stored connection setting never changes how a provider is paced (issue #19, line 10).

A simulator runs its clock faster (``time_scale``) and the connector paces to match. That speed
reaches a connection only through the sandbox harness, never through its settings, which
``connections set`` can write on a merchant's real account."""

from __future__ import annotations

from typing import Any

import pytest

from synccli.clock import SystemClock
from synccli.errors import UsageError
from synccli.sandbox import harness
from synccli.store.connections import (
    add_connection,
    get_connection,
    remove_connection,
    sandbox_time_scale,
    set_values,
)
from synccli.store.db import Store
from synccli.sync.context import build_connector


def _scale(store: Store, name: str) -> float:
    connector: Any = build_connector(store, get_connection(store, name), clock=SystemClock())
    return float(connector.http.time_scale)


def test_a_time_scale_stored_in_settings_is_paced_as_normal(store: Store) -> None:
    with harness.start("xero", products=1, customers=0) as running:
        settings, creds = harness.connection_values(running)
        add_connection(store, "shop", "xero", {**settings, "time_scale": 0.001}, creds)
        set_values(store, "shop", {k: creds[k] for k in ("access_token", "expires_at")})
        assert _scale(store, "shop") == 1.0


def test_connections_set_refuses_a_time_scale(store: Store, cli: Any) -> None:
    with harness.start("xero", products=1, customers=0) as running:
        harness.add_connection(store, "shop", running)
        done = cli("connections", "set", "shop", "time_scale=0.001")
        assert done.exit_code == 2
        assert "unknown setting 'time_scale'" in done.stderr
        assert _scale(store, "shop") == 1.0


def test_the_harness_paces_its_own_connection_at_the_simulators_speed(store: Store) -> None:
    with harness.start("xero", products=1, customers=0, time_scale=50.0) as running:
        harness.add_connection(store, "shop", running, time_scale=50.0)
        assert "time_scale" not in get_connection(store, "shop").settings
        assert _scale(store, "shop") == 50.0
        # re-pointed at a host that is not this machine, it is paced as normal again
        set_values(store, "shop", {"base_url": "https://api.xero.com"})
        assert _scale(store, "shop") == 1.0
        # the speed-up goes with the connection
        conn_id = get_connection(store, "shop").id
        remove_connection(store, "shop")
        assert sandbox_time_scale(store, conn_id) is None


def test_a_time_scale_is_no_setting_of_any_provider() -> None:
    from synccli import connsettings, registry

    for name in registry.names():
        with pytest.raises(UsageError):
            connsettings.check(name, {"time_scale": "0.001"})
