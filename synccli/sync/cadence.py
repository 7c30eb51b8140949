"""How often a stream is polled while webhooks push its changes (#23).

While deliveries of a stream are healthy (one within the connection's ``webhook_window``, default
1 hour), ``pull-products`` and ``link-customers`` poll that stream only every ``safety_poll``
(default 2 hours, the freshness promise polls alone kept) and apply what was pushed meanwhile
(``sync/push.py``). When deliveries stop for longer than the window, every run polls again by
itself. ``status`` shows each stream's mode from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from synccli.clock import utc
from synccli.store.models import Connection
from synccli.store.push import oldest_hint, polled_at
from synccli.store.webhooks import last_delivery_at

SAFETY_POLL = "2h"
WEBHOOK_WINDOW = "1h"
STREAMS = ("products", "stock", "customers")  # the streams a job polls and a push may spare
# A delivery or a poll stamped further ahead of this host's clock than this was stamped by a
# host whose clock runs ahead (a receiver, another cron host): it proves nothing about now, so
# the stream is polled as if it had none, rather than left unpolled until that clock is reached.
CLOCK_SKEW = timedelta(minutes=2)


@dataclass
class Cadence:
    """How a stream of a connection is kept fresh now."""

    stream: str
    push: bool  # deliveries are healthy: polls only every safety_poll
    last_delivery_at: datetime | None
    polled_at: datetime | None
    safety_poll: timedelta
    window: timedelta
    due: bool  # this run polls the stream
    ahead: timedelta | None = None  # the last delivery was stamped this far ahead of this clock

    @property
    def next_poll_at(self) -> datetime | None:
        if not self.push or self.polled_at is None:
            return None
        return self.polled_at + self.safety_poll

    def describe(self, now: datetime) -> str:
        if self.push:
            last = _ago(now - self.last_delivery_at) if self.last_delivery_at else "?"
            nxt = self.next_poll_at
            when = "due now" if nxt is None or nxt <= now else f"in {_span(nxt - now)}"
            return f"push: last delivery {last} ago; next safety poll {when}"
        if self.last_delivery_at is None:
            return "poll: no deliveries; polling every run"
        if self.ahead is not None:
            return (
                f"push unconfirmed: last delivery stamped {_span(self.ahead)} ahead of this "
                "host's clock (check the clocks): polling every run"
            )
        return f"push silent since {_ago(now - self.last_delivery_at)} ago: polling every run"

    def as_json(self, now: datetime) -> dict[str, Any]:
        nxt = self.next_poll_at
        return {
            "mode": "push" if self.push else "poll",
            "last_delivery_at": self.last_delivery_at.isoformat()
            if self.last_delivery_at
            else None,
            "last_poll_at": self.polled_at.isoformat() if self.polled_at else None,
            "next_poll_at": nxt.isoformat() if nxt else None,
            "safety_poll_seconds": int(self.safety_poll.total_seconds()),
            "window_seconds": int(self.window.total_seconds()),
            "summary": self.describe(now),
        }


def _span(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}" if hours else f"{minutes} min"


def _ago(delta: timedelta) -> str:
    return _span(delta)


def durations(settings: dict[str, Any]) -> tuple[timedelta, timedelta]:
    """The connection's (safety_poll, webhook_window)."""
    from synccli.sync.invoices import parse_duration  # the settings' one duration rule

    safety = parse_duration(str(settings.get("safety_poll") or SAFETY_POLL), "safety_poll")
    window = parse_duration(str(settings.get("webhook_window") or WEBHOOK_WINDOW), "webhook_window")
    return safety, window


def hint_wait(settings: dict[str, Any]) -> timedelta | None:
    """The connection's ``hint_wait`` (None: hints wait for the next pull)."""
    from synccli.sync.invoices import parse_duration

    raw = settings.get("hint_wait")
    return parse_duration(str(raw), "hint_wait") if raw else None


def cadence(s: Session, conn: Connection, stream: str, now: datetime) -> Cadence:
    """Whether ``stream`` is in push mode, and whether this run polls it."""
    safety, window = durations(dict(conn.settings or {}))
    last = last_delivery_at(s, conn.id, stream)
    last = utc(last) if last is not None else None
    ahead = last - now if last is not None and last > now + CLOCK_SKEW else None
    push = last is not None and ahead is None and now - last <= window
    polled = polled_at(s, conn.id, stream)
    polled = utc(polled) if polled is not None else None
    if polled is not None and polled > now + CLOCK_SKEW:
        polled = None  # stamped by a clock ahead of ours: not a poll to count from
    due = not push or polled is None or now >= polled + safety
    return Cadence(stream, push, last, polled, safety, window, due, ahead)


def modes(s: Session, conn: Connection, now: datetime) -> dict[str, dict[str, Any]]:
    """Each stream's cadence, for ``status`` (a stream no webhook covers says so: polled)."""
    return {stream: cadence(s, conn, stream, now).as_json(now) for stream in STREAMS}


def hints_due(s: Session, conn: Connection, now: datetime) -> tuple[bool, float | None]:
    """Whether the connection's hints are fetched now by ``hint_wait`` (the oldest has waited
    that long), else in how many seconds they will be (None: not by hint_wait)."""
    wait = hint_wait(dict(conn.settings or {}))
    oldest = oldest_hint(s, conn.id) if wait is not None else None
    if wait is None or oldest is None:
        return False, None
    left = (utc(oldest) + wait - now).total_seconds()
    return (True, None) if left <= 0 else (False, left)
