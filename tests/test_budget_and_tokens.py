"""Issue 4 over the store: the day's budget survives between runs, refreshes are serialised
across processes, secrets stay out of logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from synccli.sandbox import harness
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import ApiCall, Budget

SYNCCLI = [sys.executable, "-m", "synccli"]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["SYNC_DATA_DIR"] = str(data)
    return env


def test_day_429_stops_with_budget_code_and_next_run_makes_no_call(store: Store, cli) -> None:
    with harness.start("xero", products=10, limits={"per_day": 4}) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        # another app of the merchant's spends the rest of the tenant's day behind our back
        other = running.app.issue_tokens()
        for _ in range(3):
            requests.get(
                f"{running.url}/api.xro/2.0/Items",
                timeout=5,
                headers={
                    "Authorization": f"Bearer {other['access_token']}",
                    "xero-tenant-id": running.app.tenant,
                    "Accept": "application/json",
                },
            )
        spent = cli("pull-products", "-c", "x")
        assert spent.exit_code == 3, spent.stderr
        assert "budget" in spent.stderr and spent.stderr.count("\n") == 1
        conn = get_connection(store, "x")
        with store.session() as s:
            budget = s.get(Budget, conn.id)
            assert budget.blocked_until is not None
            recorded = s.scalar(
                select(func.count()).select_from(ApiCall).where(ApiCall.status == 429)
            )
        assert recorded == 1
        served = running.app.counters.total()
        again = cli("pull-products", "-c", "x")
        assert again.exit_code == 3
        assert running.app.counters.total() == served  # not a single call before the reset
        status = cli("status")
        assert "BLOCKED" in status.stdout


def test_known_empty_day_budget_makes_no_call(store: Store, cli) -> None:
    """When the provider's own header said nothing is left, the next run does not even try."""
    with harness.start("xero", products=10, limits={"per_day": 2}) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        assert cli("pull-products", "-c", "x").exit_code == 0
        served = running.app.counters.total()
        blocked = cli("pull-products", "-c", "x")
        assert blocked.exit_code == 3
        assert running.app.counters.total() == served
        assert running.app.counters.throttled == 0


@pytest.mark.slow
def test_two_processes_needing_a_refresh_leave_one_valid_chain(
    store: Store, _isolated_env: Path
) -> None:
    """Lightspeed refresh tokens are single-use: two processes spending the same one would break
    the chain for good. Both start with an expired access token at the same moment."""
    with harness.start("lightspeed", products=20, time_scale=50) as running:
        harness.add_connection(store, "ls", running, time_scale=50)
        from synccli.store.connections import set_values

        set_values(store, "ls", {"expires_at": "2000-01-01T00:00:00+00:00"})
        env = _env(_isolated_env)
        cmd = [*SYNCCLI, "pull-products", "-c", "ls"]
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        # one pulls, the other either pulls after it or finds the lease busy (4); never re-auth (5)
        assert codes in ([0, 0], [0, 4]), results
        refreshes = running.app.counters.calls[("POST", "oauth.token")]
        assert refreshes == 1
        conn = get_connection(store, "ls")
        assert not conn.needs_reauth
        # the chain still works: a later run refreshes again with the stored token
        set_values(store, "ls", {"expires_at": "2000-01-01T00:00:00+00:00"})
        later = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert later.returncode == 0, later.stderr
        assert running.app.counters.calls[("POST", "oauth.token")] == 2


def test_no_secret_in_verbose_output_or_logs(store: Store, cli, tmp_path: Path) -> None:
    log = tmp_path / "sync.log"
    with harness.start("xero", products=10) as running:
        conn = harness.add_connection(store, "x", running)
        from synccli.store.connections import credentials

        creds = credentials(store, conn)
        secrets = [creds["client_secret"], creds["refresh_token"], creds["access_token"]]
        from synccli.store.connections import set_values

        set_values(store, "x", {"expires_at": "2000-01-01T00:00:00+00:00"})  # force a refresh
        outputs = []
        for args in (
            ["pull-products", "-c", "x"],
            ["pull-products", "-c", "x", "--dry-run", "--json"],
            ["sweep-oldest", "5", "-c", "x", "--dry-run"],
            ["connections", "show", "x", "--json"],
            ["connections", "list", "--json"],
            ["status", "--json"],
            ["doctor"],
        ):
            r = cli("-vv", "--log-file", str(log), *args)
            outputs.append(r.stdout + r.stderr)
        new_creds = credentials(store, get_connection(store, "x"))
        secrets += [new_creds["refresh_token"], new_creds["access_token"]]
    text = "\n".join(outputs) + log.read_text()
    assert "/Items" in text  # the verbose log did log the calls
    for secret in secrets:
        assert secret not in text
