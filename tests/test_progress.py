"""Issue 18, line 13: on a terminal, a long pull shows a progress line with a total (where the
provider says one), an ETA, and "waiting N s for the rate limit" during waits; log lines never
print onto it. Piped, or under -q, --json or --log-format json, none of it is shown.

Every run is the real entry point (``python -m synccli``) in a subprocess, on a pseudo-terminal
where the terminal is the point, against a simulator serving several pages and a per-minute limit
that makes the client wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from synccli.sandbox import harness
from synccli.store.db import Store

SYNCCLI = [sys.executable, "-m", "synccli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
ETA = re.compile(r"\bETA \d+:\d\d:\d\d\b")
WAITING = re.compile(r"waiting \d+ s for the rate limit")
PRODUCTS = 2500  # three pages of Unleashed's 1000, and three of stock
T = TypeVar("T")


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.pop("NO_COLOR", None)
    env.update(SYNC_DATA_DIR=str(data), TERM="xterm-256color", COLUMNS="120", **extra)
    return env


def _on_a_terminal(
    cmd: list[str], env: dict[str, str], *, stderr_file: Path | None = None, timeout: float = 120
) -> tuple[int, str]:
    """Run ``cmd`` with stdin, stdout and stderr on a pseudo-terminal 120 columns wide (stderr
    into ``stderr_file`` instead, when given); returns its exit code and everything the terminal
    was sent."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    err = stderr_file.open("wb") if stderr_file is not None else None
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=err if err is not None else follower,
        close_fds=True,
    )
    os.close(follower)
    if err is not None:
        err.close()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _segments(screen: str) -> list[str]:
    """What the terminal showed, cut where the cursor went back to a line's start: the text of
    each line as it was drawn (escape sequences removed; a cursor move or line erase ends one)."""
    marked = ANSI.sub("\r", screen)
    return [s for s in re.split(r"[\r\n]", marked) if s.strip()]


@pytest.fixture
def limited(store: Store):
    """An Unleashed simulator with 2500 products and 2 calls a minute, on a clock that makes
    that minute last 6 seconds: a pull's 7 calls cannot all go in one, so it waits. Two, not
    more: on a loaded machine a pull's calls can be seconds apart, and a third call within
    6 s of the first is what makes the simulator answer 429 at all."""
    with harness.start(
        "unleashed", products=PRODUCTS, time_scale=10.0, limits={"per_minute": 2}
    ) as running:
        harness.add_connection(store, "u", running)
        yield running


# every run reads the whole catalogue (6 pages, 7 calls), not only what changed since the last
PULL = [*SYNCCLI, "pull-products", "-c", "u", "--since", "2000-01-01T00:00:00+00:00"]


def _waited(running: harness.Running, run: Callable[[], T]) -> T:
    """``run()``'s result, once the simulator made that run wait for the rate limit."""
    before = running.app.counters.throttled
    result = run()
    assert running.app.counters.throttled > before, "the simulator never made the pull wait"
    return result


@pytest.mark.slow
def test_a_pull_on_a_terminal_shows_a_total_an_eta_and_rate_limit_waits(
    limited: harness.Running, _isolated_env: Path
) -> None:
    code, screen = _waited(limited, lambda: _on_a_terminal([*PULL, "-v"], _env(_isolated_env)))
    assert code == 0, screen[-2000:]
    lines = _segments(screen)
    with_total = [s for s in lines if re.search(rf"\b\d+/{PRODUCTS}\b", s)]
    assert with_total, "no progress line with the provider's total:\n" + "\n".join(lines[-40:])
    assert any(ETA.search(s) for s in with_total), "no ETA:\n" + "\n".join(with_total[-20:])
    assert any(WAITING.search(s) for s in lines), "no rate-limit wait shown:\n" + "\n".join(
        lines[-40:]
    )
    # -v: one line per call. Each starts a line of its own and ends it: never glued after or
    # before the progress line's text.
    calls = re.findall(
        r"[^\r\n]*GET /(?:Products|StockOnHand)/\d+ 200[^\r\n]*", ANSI.sub("", screen)
    )
    assert len(calls) >= 6, "a call was not logged"
    for call in calls:
        assert call.lstrip().startswith("info"), f"a log line glued to other text: {call!r}"
        assert not ETA.search(call) and "for the rate limit" not in call, call
    assert "u: pulled 6 page(s)" in screen and "Traceback" not in screen


@pytest.mark.slow
def test_no_progress_line_on_a_terminal_under_quiet_json_or_json_logs(
    limited: harness.Running, _isolated_env: Path
) -> None:
    """-q prints nothing; --json prints one JSON document; --log-format json prints JSON lines
    on stderr and the summary on stdout: no progress line in any of them, though each waits."""
    env = _env(_isolated_env)
    code, quiet = _waited(limited, lambda: _on_a_terminal([*PULL, "-q"], env))
    assert code == 0 and quiet.strip() == "", quiet[-2000:]
    code, as_json = _waited(limited, lambda: _on_a_terminal([*PULL, "--json"], env))
    assert code == 0, as_json[-2000:]
    assert json.loads(as_json)[0]["report"]["pages"] == 6  # nothing but the document
    code, json_logs = _waited(
        limited, lambda: _on_a_terminal([*PULL, "-v", "--log-format", "json"], env)
    )
    assert code == 0, json_logs[-2000:]
    lines = _segments(json_logs)
    others = [s for s in lines if not s.startswith("{")]
    assert [s for s in lines if s.startswith("{")], "no JSON log line"
    for s in lines:
        if s.startswith("{"):
            json.loads(s)
    assert len(others) == 1 and others[0].startswith("u: pulled 6 page(s)"), others[-20:]


@pytest.mark.slow
def test_a_pull_whose_stderr_is_not_a_terminal_shows_no_progress(
    limited: harness.Running, _isolated_env: Path, tmp_path: Path
) -> None:
    """``2>>pull.log`` on a terminal, and both outputs piped: the log has plain lines, the
    terminal only the summary."""
    env = _env(_isolated_env)
    log_file = tmp_path / "pull.log"
    cmd = [*PULL, "-v"]
    code, terminal = _waited(limited, lambda: _on_a_terminal(cmd, env, stderr_file=log_file))
    assert code == 0, terminal[-2000:]
    logged = log_file.read_text()
    shown = _segments(terminal)
    assert len(shown) == 1 and shown[0].startswith("u: pulled 6 page(s)"), shown[-20:]
    assert "\x1b" not in logged and "\r" not in logged, logged[-2000:]
    assert re.search(r"(?m)^info +\[u/pull-products\] GET /Products/\d+ 200", logged)
    assert not ETA.search(logged) and not WAITING.search(logged), logged[-2000:]

    # FORCE_COLOR (set by many CI runners) asks for colour, not for a progress line in a pipe
    forced = {**env, "FORCE_COLOR": "1"}
    piped = _waited(
        limited,
        lambda: subprocess.run(cmd, env=forced, capture_output=True, text=True, timeout=120),
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    both = piped.stdout + piped.stderr
    assert "\x1b" not in both and "\r" not in both, both[-2000:]
    assert not ETA.search(both) and not WAITING.search(both), both[-2000:]
    assert re.search(r"(?m)^info +\[u/pull-products\] GET /StockOnHand/\d+ 200", piped.stderr)
    assert piped.stdout.splitlines()[-1].startswith("u: pulled 6 page(s)")


@pytest.mark.slow
def test_link_customers_on_a_terminal_shows_xeros_item_count_and_its_minute_limit(
    store: Store, _isolated_env: Path
) -> None:
    """Xero's Contacts pages carry ``pagination.itemCount``: the total. Two calls a minute (a
    6-second one): the client's pacer, steered by X-MinLimit-Remaining, waits before the third
    page and the fourth; the wait is shown, and the log lines stay off the progress line."""
    customers = 350  # four pages: the simulator's pages hold 100 rows, as Xero's did (page_rows)
    with harness.start(
        "xero", products=5, customers=customers, time_scale=10.0, limits={"per_minute": 2}
    ) as running:
        harness.add_connection(store, "x", running, time_scale=10.0)
        code, screen = _on_a_terminal(
            [*SYNCCLI, "link-customers", "-c", "x", "-v"], _env(_isolated_env)
        )
        pages = running.app.counters.total("GET", "Contacts")
    assert code == 0, screen[-2000:]
    assert pages == 4, pages
    lines = _segments(screen)
    with_total = [s for s in lines if re.search(rf"\b\d+/{customers}\b", s)]
    assert with_total, "no progress line with itemCount:\n" + "\n".join(lines[-40:])
    assert any(ETA.search(s) for s in with_total), "no ETA:\n" + "\n".join(with_total[-20:])
    assert any(WAITING.search(s) for s in lines), "no rate-limit wait shown:\n" + "\n".join(
        lines[-40:]
    )
    calls = re.findall(r"[^\r\n]*GET /api\.xro/2\.0/Contacts 200[^\r\n]*", ANSI.sub("", screen))
    assert len(calls) == 4, "a call was not logged:\n" + "\n".join(lines[-40:])
    for call in calls:
        assert call.lstrip().startswith("info"), f"a log line glued to other text: {call!r}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("paging", "total"),
    [("cursor", False), ("offset", True)],
    ids=["v3-cursor-no-total", "older-form-count"],
)
def test_lightspeed_pull_shows_a_total_only_where_a_page_counts_its_listing(
    store: Store, _isolated_env: Path, paging: str, total: bool
) -> None:
    """V3's cursor pages carry no count, and ``count=1`` is a call of its own (10 drips): the
    line counts what was read, with no total and no ETA, and no call is spent on one. The older
    form's ``@attributes.count`` is the total. A small bucket makes the pacer wait either way."""
    products = 350  # four pages of 100 items (with their stock)
    with harness.start(
        "lightspeed",
        products=products,
        time_scale=2.0,
        paging=paging,
        limits={"bucket_size": 3},  # a page of items with their shops costs 1.4 drips
    ) as running:
        harness.add_connection(store, "l", running, time_scale=2.0)
        code, screen = _on_a_terminal([*SYNCCLI, "pull-products", "-c", "l"], _env(_isolated_env))
    assert code == 0, screen[-2000:]
    lines = _segments(screen)
    assert any(WAITING.search(s) for s in lines), "no rate-limit wait shown:\n" + "\n".join(
        lines[-40:]
    )
    summary = next(s for s in lines if "pulled" in s)
    pages, calls = map(int, re.findall(r"(\d+) page\(s\).* (\d+) call\(s\)", summary)[0])
    assert calls == pages, f"a call was spent on something else than a page: {summary}"
    if total:  # the listing's count: every item the pull saw
        seen = int(re.findall(r"(\d+) items seen", summary)[0])
        assert seen >= products, summary
        assert any(re.search(rf"\b\d+/{seen}\b.*ETA", s) for s in lines), "\n".join(lines)
    else:
        assert any(re.search(r"\b\d+ read\b", s) for s in lines), "\n".join(lines[-40:])
        assert not any(re.search(r"\b\d+/\d+\b", s) or ETA.search(s) for s in lines), "\n".join(
            lines[-40:]
        )


def test_the_eta_shows_once_the_first_page_of_a_listing_is_read() -> None:
    """The ETA appears with the first page's count, not only once a second page arrived: a
    listing of three pages read while the client waits for the rate limit may end before a
    second page is ever drawn (CI once showed "1000/2500" and nothing more)."""
    from rich.progress import Progress

    from synccli.cli.progress import _Status

    now = [100.0]
    progress = Progress(_Status(), get_time=lambda: now[0], auto_refresh=False)
    task = progress.add_task("pull", total=None)
    now[0] = 104.0  # the first page took 4 s
    progress.update(task, advance=1000, total=2500)
    shown = _Status().render(progress.tasks[task]).plain
    assert shown.startswith("1000/2500"), shown
    # 1,500 records left at 250 a second
    assert ETA.search(shown) and "ETA 0:00:06" in shown, shown
