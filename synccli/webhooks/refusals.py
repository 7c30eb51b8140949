"""Refused requests counted per connection (``webhooks status``: rejected), off the request path.

Anyone can send requests that do not verify. Written on the request's own thread, a refusal for
a connection that exists cost a store write that one for a name no connection has did not: the
time of the answer told which names exist, which the answer itself no longer does (app.py). So a
refusal only counts in memory here, and a thread of its own writes the counts, at most
:data:`WRITES_A_SECOND` transactions a second however many requests come (each takes the store's
write lock the real deliveries need: SQLite has one). A stored delivery writes what is counted
with its own commit (``flush``), and ``webhooks serve`` does when it stops. A process killed
loses at most the last fifth of a second's counts: a count, never a delivery.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from synccli.clock import Clock
from synccli.errors import SyncError
from synccli.store import webhooks as stored
from synccli.store.db import Store

log = logging.getLogger("synccli.webhooks")

WRITES_A_SECOND = 5
IDLE_SECONDS = 30.0  # the writer thread ends after this long without a refusal (started again)


class Refusals:
    """Counts of refused requests per connection id, written by a thread of their own."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()  # guards _counts and _thread
        self._writing = threading.Lock()  # one write at a time: a flush waits for one under way
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, connection_id: int) -> None:
        """Count one refusal (no store access: the request answers at once)."""
        with self._lock:
            self._counts[connection_id] = self._counts.get(connection_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="webhook-refusals", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        """Write what is counted now; returns once every count taken so far is written (a write
        under way on the thread included)."""
        with self._writing:
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return
            now = self.clock.now()
            try:
                with self.store.session() as s:
                    for connection_id, count in counts.items():
                        stored.count_rejected(s, connection_id, now, count)
            except (SQLAlchemyError, SyncError) as exc:
                # the 401s stand; only the count is lost (a removed connection's, say)
                log.debug("refused requests not counted: %s", type(exc).__name__)

    def _run(self) -> None:
        while True:
            if not self._wake.wait(IDLE_SECONDS):
                with self._lock:
                    if not self._counts:  # nothing came meanwhile: end (add starts another)
                        self._thread = None
                        return
                continue
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a bug: never the thread, which the next refusals need
                log.exception("counting refused webhook requests failed")
            time.sleep(1.0 / WRITES_A_SECOND)  # refusals meanwhile are written together
