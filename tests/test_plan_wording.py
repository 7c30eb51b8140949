"""``plan`` says its figures as a person would: a day's look-ups to a tenth ("6.8 lookups/creates
a day", not "6.770292"), and a catalogue swept once a day "every day", not "every 1 days"."""

from __future__ import annotations

import json
import re
from pathlib import Path

REFERENCE = ["--products", "5000", "--customers", "3000", "--orders-per-day", "50"]
CRONTAB = str(Path(__file__).parent.parent / "crontab.example")


def test_a_catalogue_swept_daily_is_swept_every_day(cli) -> None:
    xero = cli("plan", *REFERENCE, "--provider", "xero", "--crontab", CRONTAB)
    assert xero.exit_code == 0, xero.stderr
    assert "whole catalogue swept every day" in xero.stdout, xero.stdout
    assert "every 1 days" not in xero.stdout
    unleashed = cli("plan", *REFERENCE, "--provider", "unleashed", "--crontab", CRONTAB)
    assert "whole catalogue swept every 7 days" in unleashed.stdout, unleashed.stdout


def test_lookups_a_day_read_to_a_tenth(cli) -> None:
    result = cli("plan", *REFERENCE, "--provider", "xero", "--crontab", CRONTAB, "--json")
    assert result.exit_code == 0, result.stderr
    [report] = json.loads(result.stdout)
    [post] = [job for job in report["jobs"] if job["job"] == "post-invoices"]
    assert "6.8 lookups/creates a day" in post["note"], post["note"]
    text = cli("plan", *REFERENCE, "--crontab", CRONTAB).stdout
    for figure in re.findall(r"([\d.]+) lookups/creates a day", text):
        assert len(figure.partition(".")[2]) <= 1, figure
