"""Token race: four processes, each running a different job (so no lease keeps them apart), start
at the same moment on connections whose access tokens have all expired. Each chain of rotating
refresh tokens must be refreshed exactly once, and no connection may be left needing
re-authorisation.

Lightspeed runs with ``revoke_on_first_use=False``: a refresh token is dead the moment it is spent,
so a second refresh with it breaks the chain for good (invalid_grant). Xero keeps a spent token
valid for a grace period, so there a double refresh would not break the chain; the count of token
calls (one per chain) and the refresh tokens seen by the sandbox (none spent twice) catch it.

The token endpoint answers slowly (``slow`` fault, 1 s) so the first refresher still holds the
lock while the others arrive: the serialisation is exercised, not just luck in timing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hostile.support import cli_env, jsonl, orders_for, serve, spawn
from sqlalchemy import select

from synccli.sandbox import harness
from synccli.sandbox.lightspeed import LightspeedSandbox
from synccli.sandbox.lightspeed_x import LightspeedXSandbox
from synccli.sandbox.xero import XeroSandbox
from synccli.store.connections import get_connection, set_values
from synccli.store.db import Store
from synccli.store.models import Connection
from synccli.sync.orders import add_orders

pytestmark = pytest.mark.reliability

SCALE = {"xero": 1000.0, "lightspeed": 200.0, "lightspeed-x": 1000.0}
TOKEN_PATH = {
    "xero": r"/connect/token$",
    "lightspeed": r"/auth/oauth/token$",
    "lightspeed-x": r"/api/1\.0/token$",  # the store's own token URL
}
CHAINS = 2  # connections, each with its own refresh-token chain
ROUNDS = 1


class _Spent:
    """Records the refresh token every token call spends."""

    def handle(self, req: Any) -> Any:
        if req.method == "POST" and req.path.endswith("/token"):
            form = req.form() if req.body[:1] != b"{" else (req.json() or {})
            if form.get("grant_type") == "refresh_token":
                with self.counters.lock:  # type: ignore[attr-defined]
                    self.spent.append(form.get("refresh_token"))  # type: ignore[attr-defined]
        return super().handle(req)  # type: ignore[misc]


class SpentLightspeed(_Spent, LightspeedSandbox):
    def __init__(self, **kw: Any) -> None:
        self.spent: list[str | None] = []
        super().__init__(**kw)


class SpentLightspeedX(_Spent, LightspeedXSandbox):
    """X-Series revokes a refresh token the moment its successor is issued (D-RT): a second
    refresh with it fails for good."""

    def __init__(self, **kw: Any) -> None:
        self.spent: list[str | None] = []
        super().__init__(**kw)


class SpentXero(_Spent, XeroSandbox):
    def __init__(self, **kw: Any) -> None:
        self.spent: list[str | None] = []
        super().__init__(**kw)


def start(provider: str) -> harness.Running:
    kw: dict[str, Any] = {"products": 30, "customers": 10, "time_scale": SCALE[provider]}
    if provider == "lightspeed":
        app: Any = SpentLightspeed(revoke_on_first_use=False, **kw)
    elif provider == "lightspeed-x":
        app = SpentLightspeedX(**kw)
    else:
        app = SpentXero(tenants=CHAINS, **kw)
    return serve(provider, app)


def connect_chains(store: Store, running: harness.Running) -> list[str]:
    """CHAINS connections, each with its own token pair (Xero: one per tenant)."""
    names = []
    tenants = list(running.app.orgs) if running.provider == "xero" else [None] * CHAINS
    for i, tenant in enumerate(tenants[:CHAINS]):
        name = f"chain{i + 1}"
        # a merchant to email: a refused invoice whose email cannot go out is exit 6
        harness.add_connection(
            store,
            name,
            running,
            tenant=tenant,
            notify_email="owner@shop.example",
            time_scale=SCALE[running.provider],
        )
        names.append(name)
    return names


def _token_calls(running: harness.Running) -> int:
    endpoint = "identity.token" if running.provider == "xero" else "oauth.token"
    return running.app.counters.total("POST", endpoint)


def _expire_all(store: Store, names: list[str], running: harness.Running, round_no: int) -> None:
    """Fresh work for every job, then every access token expired at the same moment."""
    for name in names:
        conn = get_connection(store, name)
        tenant = conn.settings.get("tenant_id") if running.provider == "xero" else None
        orders = orders_for(running, running.provider, 3, f"R{round_no}-{name}", tenant=tenant)
        add_orders(store, conn, jsonl(orders))
    for name in names:
        set_values(store, name, {"expires_at": "2000-01-01T00:00:00+00:00"})


def _jobs(names: list[str]) -> list[list[str]]:
    """Four jobs over every chain; two take the chains in one order, two in the other, so each
    chain is some process's first call (where its refresh happens)."""
    forward = [a for n in names for a in ("-c", n)]
    backward = [a for n in reversed(names) for a in ("-c", n)]
    return [
        ["pull-products", *forward],
        ["sweep-oldest", "5", *backward],
        ["link-customers", *forward],
        ["post-invoices", *backward],
    ]


def _check_exits(results: list[tuple[list[str], str, str, int]]) -> None:
    for job, _out, err, code in results:
        assert code != 5 and "re-authoris" not in err, (job, err[-2000:])
        assert code == 0, (job, err[-2000:])


@pytest.mark.parametrize(
    ("provider", "backend"),
    [
        ("xero", "sqlite"),
        ("lightspeed", "sqlite"),
        ("lightspeed-x", "sqlite"),
        pytest.param("lightspeed", "postgres", marks=pytest.mark.postgres),
        pytest.param("lightspeed-x", "postgres", marks=pytest.mark.postgres),
    ],
)
def test_four_processes_refresh_each_chain_once(
    provider: str, backend: str, request: pytest.FixtureRequest, _isolated_env: Path, cli: Any
) -> None:
    store: Store = request.getfixturevalue("pg_store" if backend == "postgres" else "store")
    url = store.engine.url.render_as_string(hide_password=False) if backend == "postgres" else None
    env = cli_env(_isolated_env, url)
    with start(provider) as running:
        names = connect_chains(store, running)
        # links for sweep-oldest (the tokens are still valid: no refresh yet)
        every = [a for n in names for a in ("-c", n)]
        first = cli("pull-products", *every)
        assert first.exit_code == 0, first.stderr
        assert _token_calls(running) == 0
        running.app.faults.slow_seconds = 0.5
        for round_no in range(1, ROUNDS + 1):
            _expire_all(store, names, running, round_no)
            calls, spent = _token_calls(running), len(running.app.spent)
            slow = running.app.faults.add("slow", method="POST", path=TOKEN_PATH[provider])
            procs = [(job, spawn(["-v", *job], env)) for job in _jobs(names)]
            results = [(job, *p.communicate(timeout=180), p.returncode) for job, p in procs]
            running.app.faults.rules.remove(slow)
            _check_exits(results)
            refreshes = _token_calls(running) - calls
            used = running.app.spent[spent:]
            assert refreshes == len(names), f"round {round_no}: {refreshes} token calls"
            assert sorted(Counter(used).values()) == [1] * len(names), "a token spent twice"
            with store.session() as s:
                flagged = list(s.scalars(select(Connection.name).where(Connection.needs_reauth)))
            assert flagged == [], f"round {round_no}: re-authorisation needed for {flagged}"
        # every chain still works after the race: one more refresh each
        _expire_all(store, names, running, ROUNDS + 1)
        calls = _token_calls(running)
        last = cli("pull-products", *every)
        assert last.exit_code == 0, last.stderr
        assert _token_calls(running) - calls == len(names)
