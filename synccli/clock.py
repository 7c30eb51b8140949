"""Clocks. Every job takes one, so tests and the month simulation can move time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

# Hosts' clocks agree within seconds; a run that ended further ahead of ours than this was
# stamped by a clock since set back (NTP after it ran fast), not in this round.
CLOCK_TOLERANCE = timedelta(minutes=1)


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock:
    """A clock that only moves when told to (or when something sleeps on it).

    Shared between the sandbox and the jobs so a simulated month runs in minutes.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, **delta)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)


def utc(dt: datetime) -> datetime:
    """Normalise to aware UTC (naive values are taken as UTC, which is how we store them)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """``2h``, ``30m``, ``1d``, ``90s`` or an ISO timestamp (UTC when it has no zone)."""
    from synccli.errors import UsageError

    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        raise UsageError(
            f"--since {value!r}: use a duration like 2h, 30m, 1d or an ISO timestamp"
        ) from None
