"""The HTTP layer's window pacer: no 429 from a minute limit, and no calls given away.

The pure tests drive :class:`WindowPacer` on a simulated clock against model providers (a fixed
window on a grid of unknown phase, as Xero documents; a rolling window), with random network
latency and client stalls; they assert counts, never durations. One test goes through the real
client and the Xero sandbox.
"""

from __future__ import annotations

import random
from collections import Counter, deque

import pytest
from xero_helpers import make_connector, running

from synccli.connectors.http import WindowPacer
from synccli.sandbox.xero import XeroSandbox


class SimClock:
    """Monotonic seconds that only move when someone sleeps or works."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FixedWindows:
    """``limit`` calls per window on a grid starting at ``phase``; others may have used some."""

    def __init__(self, limit: int, window: float, phase: float, used_before: int = 0) -> None:
        self.limit, self.window, self.phase = limit, window, phase
        self.used: Counter[int] = Counter()
        self.first: int | None = None
        self.used_before = used_before

    def take(self, t: float) -> tuple[bool, int]:
        k = int((t - self.phase) // self.window)
        if self.first is None:
            self.first = k
            self.used[k] += self.used_before
        if self.used[k] >= self.limit:
            return False, 0
        self.used[k] += 1
        return True, self.limit - self.used[k]


class RollingWindow:
    """``limit`` calls in any ``window`` seconds; sends no count of calls left."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.arrivals: deque[float] = deque()

    def take(self, t: float) -> tuple[bool, None]:
        while self.arrivals and self.arrivals[0] <= t - self.window:
            self.arrivals.popleft()
        if len(self.arrivals) >= self.limit:
            return False, None
        self.arrivals.append(t)
        return True, None


def drive(
    pacer: WindowPacer,
    clock: SimClock,
    provider: FixedWindows | RollingWindow,
    calls: int,
    seed: int,
    *,
    latency: float,
    work: float,
) -> int:
    """Send ``calls`` calls through ``pacer``; returns how many the provider refused."""
    rng = random.Random(seed)
    refused = 0
    for _ in range(calls):
        pacer.acquire()
        sent = clock.t
        clock.t += rng.uniform(0.0, latency)  # on the way: the provider counts it on arrival
        ok, left = provider.take(clock.t)
        clock.t += rng.uniform(0.0, latency)  # the answer's way back
        pacer.done(sent, clock.t, left if ok else None)
        refused += not ok
        clock.t += rng.expovariate(1 / work)  # the job's own work between calls, with stalls
    return refused


@pytest.mark.parametrize("seed", range(8))
def test_steered_pacer_fills_every_fixed_window_and_is_never_refused(seed: int) -> None:
    clock = SimClock()
    phase = random.Random(seed).uniform(0, 60)  # each tenant's window resets at its own time
    xero = FixedWindows(60, 60.0, phase)
    pacer = WindowPacer(60, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert drive(pacer, clock, xero, 600, seed, latency=0.3, work=0.05) == 0
    windows = sorted(xero.used)
    # every window between the first (entered part-way) and the last is used to the full
    assert [xero.used[k] for k in windows[1:-1]] == [60] * (len(windows) - 2)
    assert sum(xero.used.values()) == 600


@pytest.mark.parametrize("seed", range(4))
def test_steered_pacer_under_a_slow_client_still_takes_what_each_window_allows(seed: int) -> None:
    # A client that needs about 40 of the 60 seconds to make 60 calls: a rolling log would copy
    # its stalls from window to window; the provider's count lets each window start afresh.
    clock = SimClock()
    xero = FixedWindows(60, 60.0, phase=7.0)
    pacer = WindowPacer(60, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert drive(pacer, clock, xero, 600, seed, latency=0.2, work=0.45) == 0
    windows = sorted(xero.used)
    full = sum(1 for k in windows[1:-1] if xero.used[k] == 60)
    assert full >= len(windows) - 3  # a rare long stall may cost one window a few calls


def test_calls_others_made_in_the_window_are_respected() -> None:
    clock = SimClock()
    xero = FixedWindows(60, 60.0, phase=0.0, used_before=50)  # another job used 50 already
    pacer = WindowPacer(60, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert drive(pacer, clock, xero, 130, 1, latency=0.1, work=0.01) == 0
    first = min(xero.used)
    assert xero.used[first] == 60  # the ten left were ours; then we waited for the next window
    assert xero.used[first + 1] == 60


@pytest.mark.parametrize("seed", range(4))
def test_without_a_count_the_log_of_answers_is_safe_against_a_rolling_window(seed: int) -> None:
    clock = SimClock()
    rolling = RollingWindow(60, 60.0)
    pacer = WindowPacer(60, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert drive(pacer, clock, rolling, 300, seed, latency=0.5, work=0.05) == 0
    assert pacer.waited > 0  # it did pace: 300 calls do not fit one window


def test_a_count_that_goes_back_up_opens_a_new_window() -> None:
    clock = SimClock()
    pacer = WindowPacer(3, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    for left in (2, 1, 0):
        pacer.acquire()
        pacer.done(clock.t, clock.t + 0.1, left)
        clock.t += 0.1
    assert pacer.delay(clock.t) > 0  # none left: wait for the window to end
    clock.t += 10.0
    assert pacer.delay(clock.t) == 0
    pacer.acquire()
    pacer.done(clock.t, clock.t + 0.1, 2)  # a new window: two left again
    assert pacer.delay(clock.t + 0.2) == 0


def test_the_client_never_trips_the_sandbox_minute_limit_it_did_not_know() -> None:
    # The connector believes in 60 a minute; this tenant allows 5. X-MinLimit-Remaining steers.
    app = XeroSandbox(products=2, customers=0, time_scale=240, limits={"per_minute": 5})
    with running(app) as server:
        conn, _, _ = make_connector(app, server.url, time_scale=240, pace=True)
        for _ in range(23):
            assert conn.find_product("SKU-00001") is not None
        assert app.counters.throttled == 0
        assert app.counters.total("GET", "Items") == 23 == conn.http.calls


class CountStops(FixedWindows):
    """A fixed-window provider whose answers stop carrying the count after ``with_count`` calls."""

    def __init__(self, *args: float, with_count: int) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.answered = 0
        self.with_count = with_count

    def take(self, t: float) -> tuple[bool, int | None]:  # type: ignore[override]
        ok, left = super().take(t)
        self.answered += 1
        return ok, left if self.answered <= self.with_count else None


@pytest.mark.parametrize("seed", range(4))
def test_a_provider_that_stops_sending_its_count_is_still_paced(seed: int) -> None:
    clock = SimClock()
    xero = CountStops(60, 60.0, 13.0, with_count=90)
    pacer = WindowPacer(60, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert drive(pacer, clock, xero, 400, seed, latency=0.3, work=0.05) == 0  # type: ignore[arg-type]
    assert sum(xero.used.values()) == 400
