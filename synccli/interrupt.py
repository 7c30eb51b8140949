"""Ending a run on SIGINT, SIGTERM and SIGHUP, promptly and cleanly.

Each of these signals raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread,
so a job unwinds as it does on Ctrl-C: its lease is released and its run row closed. A wait on
another thread (the pull's read-ahead sleeping out a rate limit) waits on :data:`STOP` instead of
``time.sleep``, so it ends within the second too rather than after the provider's Retry-After.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP = threading.Event()
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to stop; the process exits 128 + the signal's number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    STOP.set()
    raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Turn the signals into :class:`Interrupted` for the block (main thread only; elsewhere,
    as under a test runner's worker thread, the block runs with the handlers it has)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    previous: dict[int, Any] = {}
    for sig in SIGNALS:
        if signal.getsignal(sig) == signal.SIG_IGN:
            continue  # ignored on purpose (`nohup` ignores SIGHUP): stays ignored
        previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def sleep(seconds: float) -> None:
    """``time.sleep`` that ends at once when a stop signal arrives, on any thread."""
    if seconds <= 0:
        return
    if threading.current_thread() is threading.main_thread():
        time.sleep(seconds)  # the signal handler raises here itself
        if STOP.is_set():
            raise Interrupted()
        return
    if STOP.wait(seconds):
        raise Interrupted()
