"""The cursor protocol of an incremental pull, written once (``pull-products``' products and stock
streams, ``link-customers``).

A run of one stream:

1. reads the stream's stored cursor and starts the listing that far back, less the provider's
   overlap (``Capabilities.cursor_overlap``), or from ``since`` when the operator gives one;
2. fetches the pages (page by page, or joined into batches fetched ahead on one worker thread);
3. applies each batch in one transaction with the cursor the batch allows: the connector sets a
   page's ``cursor`` only on a page of a read that held still, and the value is clamped to the
   run's start, so records changed while we read come next time; a crash loses at most the batch
   in flight, which the next run reads again;
4. rolls each batch back in a dry run (nothing is written, no cursor moves);
5. fences each batch's transaction with the running job's lease, which it renews
   (``JobContext.fence``): a run that stalled past its lease and was taken over writes
   nothing more, and ends (``LeaseLost``);
6. once the whole listing is read (and the job has done what needs all of it), advances the
   cursor to the newest stamp read, again never past the run's start.

What a batch means is the job's: it applies the records (and clamps stamps past the provider's
clock as it counts them), the runner only keeps the order above.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from synccli import interrupt
from synccli.clock import Clock
from synccli.connectors.base import Page
from synccli.progress import observed_pages
from synccli.store.db import Store
from synccli.store.sync_state import advance_cursor, get_cursor
from synccli.sync.context import JobContext

log = logging.getLogger("synccli.job")

APPLY_BATCH = 1_000  # records applied and committed together (pages are joined up to this)
# On PostgreSQL a batch is written in a few statements whatever its size (COPY), and no reader
# waits for a writer: batches of 5,000 spent about a tenth less CPU (ours and the server's) on a
# first pull of 50,000 products than batches of 1,000 (bench/store_writes.py). SQLite's one
# writer holds the file's lock for a whole batch, so it keeps 1,000.
APPLY_BATCH_POSTGRESQL = 5_000


def apply_batch(store: Store) -> int:
    """Records a batch of ``store``'s pull joins, applies and commits together."""
    postgresql = store.engine.dialect.name == "postgresql"
    return APPLY_BATCH_POSTGRESQL if postgresql else APPLY_BATCH


BATCH_LINGER = 1.0  # seconds a batch waits for more pages before it is applied as it is


class Record(Protocol):
    """What the runner reads of a record: its id (the listing's coverage) and its stamp."""

    remote_id: str
    updated_at: datetime | None


R = TypeVar("R", bound=Record)
T = TypeVar("T")


@dataclass
class Batch(Generic[R]):
    """Pages applied in one transaction, and the time they are applied at."""

    pages: list[Page[R]]
    now: datetime
    records: list[R] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.records:
            self.records = [r for page in self.pages for r in page.records]

    @property
    def cursor(self) -> datetime | None:
        """The furthest cursor its pages allow (None: none of them vouches for one)."""
        cursors = [page.cursor for page in self.pages if page.cursor is not None]
        return max(cursors) if cursors else None


@dataclass
class Retry:
    """Apply a batch again, once, when the store refuses it for a row another run wrote between
    our read and our write (post-invoices linking a product at sale time, say). ``mark`` is
    called before each attempt and answers how to undo that attempt's counts."""

    mark: Callable[[], Callable[[], None]]
    why: str  # for the log: what another run did meanwhile
    attempts: int = 2


class CursorStream(Generic[R]):
    """One incremental stream of one run: ``read`` it, then ``advance`` its cursor."""

    def __init__(
        self,
        ctx: JobContext,
        name: str,
        since: datetime | None = None,
        run_start: datetime | None = None,
    ) -> None:
        self.ctx, self.name = ctx, name
        self.run_start = run_start if run_start is not None else ctx.clock.now()
        with ctx.store.session() as s:
            cursor = get_cursor(s, ctx.connection.id, name)
            self.stored = cursor.value if cursor else None
        self.since = since
        overlap = ctx.connector.capabilities.cursor_overlap
        # where the listing starts: the operator's ``since``, else the cursor less the overlap
        # the provider's stamps need (a record stamped just before the cursor may commit after)
        self.start = (
            since if since is not None else (self.stored - overlap if self.stored else None)
        )
        self.newest: datetime | None = None  # the newest stamp read (after the job's clamping)
        self.seen: set[str] = set()  # ids of the current read of the whole listing
        # fingerprints the current read listed as unchanged (``Page.unchanged``), not in ``seen``
        self.unchanged: list[int] = []
        self.skipped = False
        self._read = False

    @property
    def by_value(self) -> bool:
        """Whether records are applied by value, not ranked by their stamps: a listing shows each
        record as it is now, and where stamps are not on the provider's clock (Unleashed's run
        hours off it) they cannot be ranked against a stamp we clamped to that clock."""
        return not self.ctx.connector.capabilities.stamps_on_provider_clock

    def start_here_if_new(self) -> bool:
        """A stream another one's first read covers (stock inside the products): with no cursor
        yet and no ``since``, it starts at this run instead of reading every row ever changed.
        Answers whether it did (then there is nothing to read)."""
        if self.stored is not None or self.since is not None:
            return False
        if not self.ctx.dry_run:
            with self.ctx.writing() as s:
                advance_cursor(
                    s, self.ctx.connection.id, self.name, self.run_start, self.ctx.clock.now()
                )
        self.skipped = True
        return True

    def read(
        self,
        fetch: Callable[[datetime | None], Iterator[Page[R]]],
        apply: Callable[[Session, Batch[R]], None],
        *,
        counted: Callable[[Batch[R]], None] | None = None,
        applied: Callable[[], None] | None = None,
        batch_records: int | None = None,
        retry: Retry | None = None,
        track_seen: bool = False,
    ) -> None:
        """Read the listing from ``start`` to its end, applying it batch by batch.

        ``counted`` sees each batch before it is applied (no transaction open), ``apply`` applies
        it in the batch's transaction, ``applied`` runs once it is committed. With
        ``batch_records`` pages are joined up to that many records and fetched ahead on one worker
        thread (the calls' ledger rows then wait for the end: see ``calls_deferred``); without,
        each page is a batch of its own. With ``track_seen`` the ids of the latest whole read are
        kept in ``seen`` (a relisted page starts it again)."""
        ctx = self.ctx
        timed = timed_pages(ctx.clock, lambda: ctx.calls, lambda: fetch(self.start))
        pages = observed_pages(ctx.progress, self.name, timed)
        batches: Iterator[list[Page[R]]]
        deferred: AbstractContextManager[None]
        if batch_records:
            batches, deferred = read_ahead(pages, batch_records), ctx.calls_deferred()
        else:
            batches, deferred = ([page] for page in pages), nullcontext()
        with deferred:
            for pages_ in batches:
                batch = Batch(pages_, ctx.clock.now())
                if track_seen:
                    self._see(batch)
                if counted is not None:
                    counted(batch)
                self._apply(batch, apply, retry)
                stamps = [r.updated_at for r in batch.records if r.updated_at]
                if stamps:
                    self.newest = max([self.newest, *stamps]) if self.newest else max(stamps)
                if applied is not None:
                    applied()
                ctx.heartbeat()
        self._read = True

    def _see(self, batch: Batch[R]) -> None:
        for page in batch.pages:
            if page.relisted:
                self.seen.clear()  # the listing is read again: only that read counts
                self.unchanged.clear()
            self.seen.update(r.remote_id for r in page.records)
            self.unchanged.extend(page.unchanged)

    def _apply(
        self,
        batch: Batch[R],
        apply: Callable[[Session, Batch[R]], None],
        retry: Retry | None,
    ) -> None:
        attempts = retry.attempts if retry is not None else 1
        for attempt in range(1, attempts + 1):
            undo = retry.mark() if retry is not None else None
            try:
                self._apply_once(batch, apply)
                return
            except IntegrityError:
                if retry is None or undo is None or attempt == attempts:
                    raise
                undo()
                log.info(
                    "pages %d-%d: %s; applying them again",
                    batch.pages[0].number,
                    batch.pages[-1].number,
                    retry.why,
                )

    def _apply_once(self, batch: Batch[R], apply: Callable[[Session, Batch[R]], None]) -> None:
        ctx = self.ctx
        # fenced: a run that stalled past its lease, which another run took over meanwhile,
        # writes neither the batch it read before the stall nor its cursor
        with ctx.writing() as s:
            apply(s, batch)
            cursor = batch.cursor
            if not ctx.dry_run and cursor is not None:
                # committed with the batch it describes, and never past the run's start
                advance_cursor(
                    s,
                    ctx.connection.id,
                    self.name,
                    min(cursor, self.run_start),
                    batch.now,
                    batch.pages[-1].number,
                )
            if ctx.dry_run:
                s.rollback()

    def advance(self) -> datetime | None:
        """After the whole listing was read: the cursor to the newest stamp read (never past the
        run's start). Answers the stored cursor (None in a dry run, which moves nothing)."""
        if not self._read:
            raise RuntimeError(f"stream {self.name}: the cursor advances only after a whole read")
        ctx = self.ctx
        if ctx.dry_run:
            return None
        with ctx.writing() as s:
            final = min(self.newest, self.run_start) if self.newest else None
            advance_cursor(s, ctx.connection.id, self.name, final, ctx.clock.now(), None)
            cursor = get_cursor(s, ctx.connection.id, self.name)
            return cursor.value if cursor else None


def timed_pages(
    clock: Clock, calls: Callable[[], int], listing: Callable[[], Iterable[Page[T]]]
) -> Iterator[Page[T]]:
    """The pages of ``listing()`` (called now), each stamped with when it was read
    (``Page.read_at``): this clock just before the call whose answer the page holds, so the
    stamp never runs ahead of what the page shows. ``calls`` counts the connector's calls: a
    page that came without a call of its own (one answer split into pages, Xero's Items) holds
    an earlier answer, and takes its time. A page stamped already (a listing read earlier, held
    and handed on) keeps its stamp."""
    read_at = clock.now()
    pages = iter(listing())
    # an answer that came as the listing began is held from ``read_at`` on
    return _timed(clock, calls, pages, read_at)


def _timed(
    clock: Clock, calls: Callable[[], int], pages: Iterator[Page[T]], read_at: datetime
) -> Iterator[Page[T]]:
    made = calls()
    while True:
        before = clock.now()
        page = next(pages, None)
        if page is None:
            return
        if calls() != made:  # this page's answer came now
            read_at, made = before, calls()
        if page.read_at is None:
            page.read_at = read_at
        yield page


def read_ahead(
    pages: Iterator[Page[T]], size: int = APPLY_BATCH, linger: float = BATCH_LINGER
) -> Iterator[list[Page[T]]]:
    """Yield ``pages`` in order, joined into batches of about ``size`` records, while the next
    batch is already being fetched on one worker thread.

    A pull alternates waiting for the provider with applying to the store; fetching the next
    batch while one is applied keeps both busy, and applying 1,000 records in one transaction
    instead of ten pages of 100 halves the store's work per record (Lightspeed). The worker stops
    once a whole batch waits, so at most one batch (and the page in flight) is ahead. A batch is
    also let go when its first page has waited ``linger`` seconds, so a slow provider's pages are
    still committed as they come. Pages come from one thread at a time, so the connector's paging
    (cursors, next links) is as before. If applying stops the pull, the page in flight is
    awaited (its call is in the ledger) and dropped with the batch not applied: the cursor only
    moves with applied pages, so the next run reads them again.
    """
    ahead = _ReadAhead(pages, size, linger)
    # A daemon: after a stop signal the process may exit while a call of the worker is still on
    # the wire (see ``_ReadAhead.stop``).
    context = contextvars.copy_context()  # the run's log context follows the calls
    worker = threading.Thread(
        target=context.copy().run, args=(ahead.work,), name="read-ahead", daemon=True
    )
    worker.start()
    try:
        while True:
            batch, finished, error = ahead.take()
            if batch:
                yield batch
            if finished and not batch:
                if error is not None:
                    raise error
                return
    finally:
        ahead.stop(worker)


class _ReadAhead(Generic[T]):
    """The state ``read_ahead``'s worker and its consumer share, under one condition."""

    def __init__(self, pages: Iterator[Page[T]], size: int, linger: float) -> None:
        self.pages, self.size, self.linger = pages, size, linger
        self.ready = threading.Condition()
        self.buffer: list[Page[T]] = []
        self.held = 0  # records in the buffer
        self.done = False
        self.error: BaseException | None = None
        self.stopped = False
        self.since = 0.0  # when the buffer's first page came

    def work(self) -> None:
        try:
            while self._fetch_one():
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, in order
            with self.ready:
                self.error, self.done = exc, True
                self.ready.notify_all()

    def _fetch_one(self) -> bool:
        """Fetch the next page into the buffer once there is room; False when the work is over."""
        with self.ready:
            while self.held >= self.size and not self.stopped:
                self.ready.wait()
            if self.stopped:
                return False
        page = next(self.pages, None)
        with self.ready:
            if page is None:
                self.done = True
            else:
                if not self.buffer:
                    self.since = time.monotonic()
                self.buffer.append(page)
                self.held += len(page.records)
            self.ready.notify_all()
            return not self.done

    def take(self) -> tuple[list[Page[T]], bool, BaseException | None]:
        """The next batch (possibly empty once the listing ended), whether the worker is done,
        and the error it stopped on."""
        with self.ready:
            while not self.done and self.held < self.size:
                if not self.buffer:
                    self.ready.wait()
                    continue
                left = self.since + self.linger - time.monotonic()
                if left <= 0:
                    break
                self.ready.wait(left)
            batch = self.buffer[:]
            self.buffer.clear()
            self.held = 0
            self.ready.notify_all()
            return batch, self.done, self.error

    def stop(self, worker: threading.Thread) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify_all()
        # Its waits end with a stop signal (interrupt.sleep); a call on the wire may not, and a
        # stopped run must end within the second: it is then left to the process's exit.
        while worker.is_alive():
            worker.join(0.1)
            if interrupt.STOP.is_set():
                worker.join(0.5)
                break
