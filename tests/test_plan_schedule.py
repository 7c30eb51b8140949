"""Issue 18, line 18 (plan): an over-budget schedule exits non-zero, and the schedule `plan`
proposes is crontab lines that can be pasted as they are (and fit when costed again)."""

from __future__ import annotations

from pathlib import Path


def _proposal(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "a schedule that fits" in line) + 1
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line.strip())
    return out


def test_an_over_budget_schedule_exits_non_zero_with_a_pasteable_one(cli, tmp_path: Path) -> None:
    greedy = tmp_path / "greedy.cron"
    greedy.write_text("* * * * * /usr/local/bin/synccli pull-products --all\n")
    args = ["plan", "--products", "5000", "--customers", "3000", "--orders-per-day", "50"]
    over = cli(*args, "--provider", "unleashed", "--crontab", str(greedy))
    assert over.exit_code == 3, over.stdout + over.stderr
    assert "exceed" in over.stderr
    proposal = _proposal(over.stdout)
    jobs = [line for line in proposal if not line.startswith("#")]
    assert len(jobs) == 4
    for line in jobs:
        fields = line.split(None, 5)
        assert len(fields) == 6, line  # five time fields and a command, on one line
        assert fields[5].startswith("/usr/local/bin/synccli "), line  # as crontab.example
    pasted = tmp_path / "pasted.cron"
    pasted.write_text("\n".join(proposal) + "\n")
    fits = cli(*args, "--provider", "unleashed", "--crontab", str(pasted))
    assert fits.exit_code == 0, fits.stdout + fits.stderr
    assert "exceed" not in fits.stdout + fits.stderr
