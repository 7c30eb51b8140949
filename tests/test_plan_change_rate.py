"""The daily change rate is a parameter of ``plan`` and of bench/month.py, and crontab.example's
header states what ``plan`` prints for the reference merchant (kept in step here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synccli import registry
from synccli.sync import plan as planning

ROOT = Path(__file__).resolve().parents[1]
CRONTAB = ROOT / "crontab.example"
BIG = ["--products", "100000", "--customers", "3000", "--orders-per-day", "50"]


def _pull_calls(cli, *args: str) -> dict[str, float]:
    result = cli("plan", *BIG, "--json", *args)
    assert result.exit_code in (0, 3), result.stderr
    return {
        r["provider"]: next(j["calls_per_day"] for j in r["jobs"] if j["job"] == "pull-products")
        for r in json.loads(result.stdout)
    }


def test_plan_takes_the_daily_change_rate(cli) -> None:
    quiet = _pull_calls(cli)
    busy = _pull_calls(cli, "--change-rate", "0.5", "--stock-change-rate", "0.5")
    assert quiet == _pull_calls(cli, "--change-rate", "0.02", "--stock-change-rate", "0.05")
    # a listing of what changed pages by the changes: more changes, more pages
    assert busy["lightspeed"] > quiet["lightspeed"]
    assert all(busy[name] >= quiet[name] for name in registry.names())
    refused = cli("plan", *BIG, "--change-rate", "2")
    assert refused.exit_code == 2 and "--change-rate" in refused.stderr


def test_crontab_example_states_what_plan_prints_for_the_reference_merchant() -> None:
    schedule = planning.load_schedule(CRONTAB)
    reports = [planning.plan(name, planning.REFERENCE, schedule) for name in registry.names()]
    expected = planning.crontab_header(reports)
    lines = CRONTAB.read_text(encoding="utf-8").splitlines()
    command = [line for line in lines if line.startswith("# `synccli plan ")]
    table = [line for line in lines if line.startswith("#   ")]
    assert [*command, *table] == expected, "crontab.example's header should read:\n" + "\n".join(
        expected
    )


def test_the_month_simulation_takes_the_same_change_rates_as_plan(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setattr(sys, "argv", ["month.py"])
    import month

    default = month.parse_args([])
    assert (default.change_rate, default.stock_change_rate) == (
        planning.REFERENCE.product_change_rate,
        planning.REFERENCE.stock_change_rate,
    )
    args = month.parse_args(["--change-rate", "0.1", "--stock-change-rate", "0.2"])
    assert (args.change_rate, args.stock_change_rate) == (0.1, 0.2)
