"""Stored deliveries applied within a second of their commit, off the request path (#23).

``webhooks serve`` answers a delivery once it is stored; the receiver then names the connection
here, and one worker thread applies that connection's pending records (``sync.push``: no API
call) a moment later, so a burst of deliveries is applied in one transaction, not one each. A
connection whose pull holds the lease is tried again shortly (the pull applies them meanwhile).
Deliveries that name only an id (hints) wait for the next pull, unless the connection sets
``hint_wait``: then they are fetched, in the provider's batches, once the oldest has waited that
long (a lever between freshness and calls for providers that push ids only, as Unleashed).
A receiver under another WSGI server leaves this to ``webhooks apply`` from cron.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from synccli.clock import Clock, SystemClock
from synccli.store.connections import list_connections
from synccli.store.db import Store

log = logging.getLogger("synccli.webhooks")

LINGER = 0.5  # seconds a named connection waits for more deliveries before it is applied
BUSY_RETRY = 5.0  # seconds before a connection whose job held the lease is tried again


class Applier:
    """One worker thread applying the connections it is told of."""

    def __init__(self, store: Store, clock: Clock | None = None, linger: float = LINGER) -> None:
        self.store, self.clock, self.linger = store, clock or SystemClock(), linger
        self._due: dict[int, float] = {}  # connection id -> when to apply it (monotonic)
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="webhook-apply", daemon=True)
        self.applied = 0  # records applied so far (for the log and the tests)
        self.fetched = 0  # hinted records fetched so far

    def start(self) -> Applier:
        self._thread.start()
        return self

    def stored(self, connection_ids: Iterable[int]) -> None:
        """Deliveries of these connections were committed: apply them soon."""
        at = time.monotonic() + self.linger
        with self._ready:
            for cid in connection_ids:
                self._due[cid] = min(self._due.get(cid, at), at)
            self._ready.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(timeout)

    def _next(self) -> list[int] | None:
        with self._ready:
            while not self._stopped:
                now = time.monotonic()
                ready = [cid for cid, at in self._due.items() if at <= now]
                if ready:
                    for cid in ready:
                        del self._due[cid]
                    return ready
                wait = min(self._due.values(), default=now + 1.0) - now
                self._ready.wait(max(0.01, wait))
            return None

    def _run(self) -> None:
        while (ready := self._next()) is not None:
            try:
                self._apply(ready)
            except Exception:  # never the receiver's answers: log, try with the next delivery
                log.exception("applying stored webhook deliveries failed")

    def _apply(self, ids: list[int]) -> None:
        from synccli.sync.push import apply_connection

        conns = {c.id: c for c in list_connections(self.store) if c.id in ids}
        for cid, conn in conns.items():
            report = apply_connection(self.store, conn, self.clock)  # hints: by hint_wait
            self.applied += report.applied
            self.fetched += report.fetched
            later = report.hints_in
            if report.busy:
                later = BUSY_RETRY if later is None else min(later, BUSY_RETRY)
            if later is not None:
                at = time.monotonic() + later
                with self._ready:
                    self._due[cid] = min(self._due.get(cid, at), at)
            if report.applied or report.hinted:
                log.info(
                    "webhooks %s: %d applied, %d superseded, %d to fetch",
                    conn.name,
                    report.applied,
                    report.superseded,
                    report.hinted,
                )
