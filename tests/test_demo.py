"""Issue 8: `make demo` runs the whole schedule and ends with the status table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synccli import registry


@pytest.mark.slow
def test_demo_runs_the_schedule_twice_and_ends_with_status(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["HOME"] = str(tmp_path)  # a fresh machine: no configuration anywhere
    result = subprocess.run(
        [sys.executable, "-m", "synccli", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Round 1" in out and "Round 2" in out
    for provider in registry.names():
        assert f"demo-{provider}: pull-products" in out
        assert f"demo-{provider}: post-invoices" in out
    assert "calls)" in out  # every step says what it cost
    assert "refused invoice WEB-1999" in out  # the rejected order's email landed in the outbox
    # every provider's refusal email is listed, not only the first few
    listed = [ln for ln in out.splitlines() if ln.endswith("refused invoice WEB-1999")]
    assert len(listed) == len(registry.names()), listed
    tail = out.strip().splitlines()[-8:]
    assert any(line.startswith("job") and "outcome" in line for line in tail)
    assert not (tmp_path / ".local").exists()  # the throwaway store is gone
