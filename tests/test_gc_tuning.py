"""The pull's garbage-collector settings: fewer collections inside, everything as it was after,
and cyclic garbage made inside still freed."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from synccli.gc_tuning import BULK_THRESHOLD, fewer_collections
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.sync import products
from synccli.sync.context import job_run


@pytest.fixture(autouse=True)
def _default_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_inside_the_block_collections_are_rarer_and_older_objects_left_out() -> None:
    assert gc.get_freeze_count() == 0
    with fewer_collections():
        assert gc.get_threshold() == (BULK_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0  # what was alive at the start is not walked again
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_cycle_made_inside_is_still_collected() -> None:
    with fewer_collections():
        node = Node()
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None


def test_nested_and_concurrent_blocks_restore_once_at_the_outermost_end() -> None:
    inner_done = threading.Event()
    release = threading.Event()

    def other() -> None:
        with fewer_collections(50_000):
            inner_done.set()
            release.wait(5)

    with fewer_collections():
        with fewer_collections():
            pass
        assert gc.get_threshold()[0] == BULK_THRESHOLD  # the inner end changed nothing
        worker = threading.Thread(target=other)
        worker.start()
        assert inner_done.wait(5)
    assert gc.get_threshold()[0] == BULK_THRESHOLD  # the other thread's block is still open
    release.set()
    worker.join()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_failing_block_restores_the_settings() -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_pull_collects_less_often_and_leaves_the_settings_as_they_were(store: Store) -> None:
    with harness.start("lightspeed", products=2_000, customers=2, time_scale=200.0) as running:
        conn = harness.add_connection(store, "shop", running, time_scale=200.0)
        before = [s["collections"] for s in gc.get_stats()]
        with job_run(store, "pull-products", conn) as jc:
            report = products.pull_products(jc)
        ran = [s["collections"] - b for s, b in zip(gc.get_stats(), before, strict=True)]
    assert report.seen - report.uncoded == report.new == 2_000  # and its items with no code
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
    # 54 youngest-generation collections with the defaults (sandbox included, same process)
    assert ran[0] < 20, ran
