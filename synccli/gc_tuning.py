"""Fewer cyclic garbage collections while a job allocates in bulk.

A first pull builds about a million short-lived objects (parsed pages, records, rows), nearly
none of them in reference cycles. With CPython's default threshold (a collection every 700 new
container objects) a 50,000-product Lightspeed pull ran the collector 813 times (6 of them over
everything alive, SQLAlchemy's mappers and compiled statements included), 0.48 s in all, each
pause holding the interpreter lock that the fetching and the applying threads share. With the
settings below: 84 collections, none full, 0.08 s. With the budget check's statement built
once (the same day's change), single Lightspeed pulls went from 11,837-14,393 to
14,468-16,606 items/s in the same hour (``bench/throughput.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 10_000  # new container objects between youngest-generation collections

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections(threshold: int = BULK_THRESHOLD) -> Iterator[None]:
    """Within the block, collect the youngest generation every ``threshold`` allocations
    instead of 700, and leave the objects alive at its start out of every collection
    (``gc.freeze``): they are the process's own, not the job's garbage. Both are undone at the
    end, where the outermost of nested or concurrent blocks ends. Cycles made inside the block
    are still collected, only less often; memory grows by at most ``threshold`` objects'
    worth."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(threshold, _saved[0]), *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()
                _saved = None
