"""``plan`` costs each provider from its registry entry; the figures are the ones it printed when
each provider's costs were written out by hand (tests/data/plan_figures.json, captured then),
for orders without payments or refunds (the mix plan knew then: tests/test_plan_mix.py costs
them)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from synccli import registry
from synccli.sync import plan as planning

FIGURES = json.loads((Path(__file__).parent / "data" / "plan_figures.json").read_text())
MERCHANTS = [(5000, 3000, 50), (20000, 8000, 400), (300, 100, 5), (100000, 50000, 2000)]
CRONTAB = Path(__file__).parent.parent / "crontab.example"


@pytest.mark.parametrize("crontab", [None, CRONTAB], ids=["default", "crontab.example"])
@pytest.mark.parametrize("provider", sorted({k.split()[0] for k in FIGURES}))
def test_plan_figures_are_unchanged(provider: str, crontab: Path | None) -> None:
    schedule = planning.load_schedule(crontab)
    for products, customers, orders in MERCHANTS:
        plain = planning.Merchant(products, customers, orders, payment_share=0, refund_share=0)
        report = planning.plan(provider, plain, schedule)
        key = f"{provider} {products}/{customers}/{orders} {crontab.name if crontab else 'default'}"
        assert dataclasses.asdict(report) == FIGURES[key], key


def test_every_registered_provider_is_costed() -> None:
    merchant = planning.Merchant(5000, 3000, 50)
    for name in registry.names():
        report = planning.plan(name, merchant, planning.DEFAULT_SCHEDULE)
        assert report.calls_per_day > 0
        assert (report.limit_day, report.limit_month) == (
            registry.get(name).limits.per_day,
            registry.get(name).limits.per_month,
        )
