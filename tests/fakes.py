"""A fake provider for job tests: the connector contract over an in-memory account, no HTTP.

A job test asserts what a job does with what a provider says (which rows it writes, what it
asks for, how often, what it makes of a refusal or a lost answer), not how a provider spells it
on the wire. The simulators (``synccli/sandbox``) stay for that, for the connector tests and for
one end-to-end test per job and provider; a job test runs against :class:`FakeProvider` instead,
in milliseconds rather than a simulator thread's seconds.

- **World**: products (price, stock, archived, deleted), customers and invoices of the
  simulators' own data model (``synccli.sandbox.data``), so a test changes them with the same
  calls (``provider.catalogue.change_prices(provider.tenant, 37)``) and stamps them on the
  test's clock.
- **Calls**: every contract method is one call (a listing one call a page, a look-up one call
  per ``lookup_batch`` ids), counted per method in :attr:`FakeProvider.calls` and recorded in
  the run's ledger exactly as the HTTP layer records one, so budgets, ``runs.calls`` and a run's
  ``ctx.calls`` behave as with a real connector.
- **Faults**: :meth:`FakeProvider.fail` makes the next matching call fail: a transient error,
  a rate limit, a spent budget, a write whose answer is lost after it was made, a refusal, or a
  dead authorisation.
- **Seam**: ``job_run(..., connector_factory=provider.factory)`` (or :meth:`FakeProvider.run`)
  runs a job against it; nothing is patched.

Each provider name (``like=``) lends the fake the real connector's capabilities and limits, so
a job plans its calls as it would for that provider (Xero's one Items call and batches of 50
invoices, Unleashed's separate stock stream, Lightspeed's pages of 100...).
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

from synccli.clock import Clock, SimClock
from synccli.connectors.base import (
    Capabilities,
    Connector,
    InvoiceDraft,
    NewCustomer,
    NewProduct,
    Page,
    PostedInvoice,
    RemoteCustomer,
    RemoteProduct,
    RemoteStock,
)
from synccli.connectors.http import CallRecord, Ledger
from synccli.errors import AuthError, BudgetExhausted, RateLimited, Rejected, TransientError
from synccli.progress import QUIET, ProgressObserver
from synccli.sandbox import data
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.ledger import StoreLedger
from synccli.store.models import Connection
from synccli.sync.context import JobContext, connector_class, job_run

CENT = Decimal("0.01")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMBER_TAKEN = "Invoice # must be unique."  # what the fake says to a number it has already
FAULTS = ("transient", "rate_limited", "budget", "lost", "rejected", "auth")
WRITES = frozenset({"create_product", "create_customer", "post_invoice", "post_invoices"})


@dataclass
class Fault:
    """The next ``times`` calls of ``method`` (a name or several; any method when None) whose
    argument satisfies ``when`` fail this way; with ``chance``, each such call fails with that
    probability instead (drawn from the provider's seeded generator), however many times.

    - ``transient``: nothing happens, a TransientError (a 503, a timeout) is raised.
    - ``rate_limited``: a 429 the HTTP layer gave up waiting for (RateLimited).
    - ``budget``: the provider says the day's budget is spent: the ledger stores the block, as
      the HTTP layer does, and BudgetExhausted is raised.
    - ``lost``: the write is made, then its answer is lost (TransientError).
    - ``rejected``: the provider refuses the request (Rejected with ``messages``).
    - ``auth``: the provider refuses the credentials (AuthError).
    """

    kind: str
    method: str | tuple[str, ...] | None = None
    times: int = 1
    messages: tuple[str, ...] = ("refused by the provider",)
    when: Callable[[Any], bool] | None = None
    chance: float | None = None
    fired: int = 0

    def matches(self, method: str, arg: Any, rng: random.Random) -> bool:
        methods = (self.method,) if isinstance(self.method, str) else self.method
        if methods is not None and method not in methods:
            return False
        if self.chance is None and self.fired >= self.times:
            return False
        if self.when is not None and not self.when(arg):
            return False
        return self.chance is None or rng.random() < self.chance


class FakeHttp:
    """What a job reads of a connector's HTTP layer: its call count, the provider's clock, the
    fence and write wait a claimed write runs under, the progress observer, and the ledger every
    call is recorded in."""

    def __init__(self, clock: Clock, ledger: Ledger | None) -> None:
        self.clock, self.ledger = clock, ledger
        self.calls = 0
        self.cost = 0.0
        self.server_date: datetime | None = None
        self.fence: Callable[[], None] | None = None
        self.write_wait: float | None = None
        self.observer: ProgressObserver = QUIET

    def call(self, method: str, write: bool, perform: Callable[[], Any]) -> Any:
        """One call, in the HTTP layer's order: the ledger's budget check, the fence before a
        write, the call, and its record in the ledger whatever the outcome."""
        now = self.clock.now()
        if self.ledger is not None:
            self.ledger.check(now, 1.0)
        if write and self.fence is not None:
            self.fence()
        status: int | None = 200
        try:
            return perform()
        except BudgetExhausted:
            status = 429
            raise
        except AuthError:
            status = 401
            raise
        except Rejected:
            status = 400
            raise
        except TransientError:
            status = None
            raise
        finally:
            self.calls += 1
            self.cost += 1.0
            self.server_date = now
            if self.ledger is not None:
                path = f"/fake/{method}"
                self.ledger.record(CallRecord(now, "POST" if write else "GET", path, status, 0, 1))


class FakeProvider:
    """One merchant's account at a pretend provider, kept across runs; each run gets its own
    :class:`FakeConnector` over it (see :meth:`factory`)."""

    tenant = "fake"

    def __init__(
        self,
        like: str = "xero",
        *,
        products: int = 0,
        customers: int = 0,
        clock: Clock | None = None,
        seed: int = 42,
        page_size: int | None = None,
        capabilities: Capabilities | None = None,
        stock_stream: bool | None = None,
        account_numbers: bool = True,
    ) -> None:
        self.provider = like
        self.clock = clock or SimClock()
        self.catalogue = data.Catalogue(seed, self.clock)
        self.world = self.catalogue.tenant(self.tenant)
        self.catalogue.gen.populate(self.world, products, customers)
        self.capabilities = capabilities or connector_class(like).capabilities
        # records a listing's page holds (Xero's Items come in one page whatever this is)
        self.page_size = page_size or self.capabilities.catalogue_page or 1000
        self.real = connector_class(like)  # lends its rules (see FakeConnector)
        # Whether stock changes are read from a stream of their own (Unleashed's StockOnHand,
        # Lightspeed's ItemShops), or move the product's own stamp and come with it (Xero's one
        # Items call, where changed_stock makes no call).
        full = self.capabilities.full_catalogue_call
        self.stock_stream = not full if stock_stream is None else stock_stream
        # Whether a second invoice under a number in use is refused (Xero: "Invoice # must be
        # unique."), as the real connector reads a refusal; elsewhere it is simply made, which
        # is what a job's look-up after an unclear post must prevent.
        self.unique_numbers = self.real.number_taken(cast(Any, None), [NUMBER_TAKEN])
        # whether customers carry an account number (Lightspeed R-Series' have none)
        self.account_numbers = account_numbers
        self.calls: Counter[str] = Counter()  # per contract method, across runs
        self.faults: list[Fault] = []
        self.connectors: list[FakeConnector] = []
        self.keys: dict[str, str] = {}  # idempotency key -> invoice id (where honoured)
        self.rng = random.Random(seed)  # draws the faults given a chance
        # one call at a time, as a provider serialises the writes to one account: jobs on
        # several threads may share the fake
        self.lock = threading.RLock()

    # set-up ------------------------------------------------------------------------------------
    def add_connection(
        self, store: Store, name: str = "shop", notify_email: str | None = None, **settings: Any
    ) -> Connection:
        """A store connection for this provider's name (the fake stands in for its connector)."""
        creds = {"fake": "not-a-secret"}
        return add_connection(store, name, self.provider, settings, creds, notify_email)

    def factory(self, ctx: JobContext) -> FakeConnector:
        """``JobContext.connector_factory``: a connector counted in the run's ledger, as
        ``build_connector`` makes one."""
        conn = ctx.connection
        ledger = StoreLedger(
            ctx.store,
            conn.id,
            self.capabilities.limits,
            run_id=ctx.run_id,
            reserve=ctx.reserve,
            read_only=ctx.dry_run,
            name=conn.name,
        )
        return self.connector(ledger, dict(conn.settings or {}))

    def connector(
        self, ledger: Ledger | None = None, settings: dict[str, Any] | None = None
    ) -> FakeConnector:
        connector = FakeConnector(self, FakeHttp(self.clock, ledger), settings or {})
        self.connectors.append(connector)
        return connector

    @contextmanager
    def run(self, store: Store, job: str, conn: Connection, **kw: Any) -> Iterator[JobContext]:
        """``job_run`` with this provider's connector."""
        kw.setdefault("clock", self.clock)
        with job_run(store, job, conn, connector_factory=self.factory, **kw) as ctx:
            yield ctx

    # faults and counts -------------------------------------------------------------------------
    def fail(
        self,
        kind: str,
        method: str | tuple[str, ...] | None = None,
        *,
        times: int = 1,
        messages: tuple[str, ...] = ("refused by the provider",),
        when: Callable[[Any], bool] | None = None,
        chance: float | None = None,
    ) -> Fault:
        """Make the next ``times`` matching calls fail, or each with ``chance`` (see
        :class:`Fault`)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULTS)}")
        fault = Fault(kind, method, times, messages, when, chance)
        self.faults.append(fault)
        return fault

    def total(self) -> int:
        return sum(self.calls.values())

    def writes(self) -> int:
        return sum(n for method, n in self.calls.items() if method in WRITES)

    def _fault(self, method: str, arg: Any) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, arg, self.rng):
                fault.fired += 1
                return fault
        return None

    # the world, as the connector reads it ------------------------------------------------------
    def invoices(self) -> list[data.Invoice]:
        return list(self.world.invoices.values())

    def product(self, code: str) -> data.Product | None:
        return self.world.product_by_code(code)


def _raise(fault: Fault, method: str, now: datetime) -> None:
    where = f"fake {method}"
    if fault.kind in ("transient", "lost"):
        what = "answer lost" if fault.kind == "lost" else "HTTP 503"
        raise TransientError(f"{where}: {what}", status=None if fault.kind == "lost" else 503)
    if fault.kind == "rate_limited":
        raise RateLimited(f"{where}: rate limited (minute)", retry_after=1.0, status=429)
    if fault.kind == "rejected":
        raise Rejected(f"{where}: {fault.messages[0]}", errors=list(fault.messages), status=400)
    if fault.kind == "auth":
        raise AuthError(f"{where}: not authorised (token refused)", status=401)
    raise AssertionError(fault.kind)


class FakeConnector(Connector):
    """The contract over a :class:`FakeProvider`'s account, for one run."""

    provider = "fake"

    def __init__(self, fake: FakeProvider, http: FakeHttp, settings: dict[str, Any]) -> None:
        super().__init__(http, settings)
        self.fake, self.http = fake, http
        self.provider = fake.provider
        self.capabilities = fake.capabilities
        self.customer_ids_a_call = fake.real.customer_ids_a_call  # the real one's look-up size
        self.primed: dict[str, dict[str, Any]] = {}

    # one call ----------------------------------------------------------------------------------
    def _call(self, method: str, arg: Any, perform: Callable[[], Any]) -> Any:
        write = method in WRITES

        def attempt() -> Any:
            with self.fake.lock:
                return answer()

        def answer() -> Any:
            self.fake.calls[method] += 1
            fault = self.fake._fault(method, arg)
            if fault is None:
                return perform()
            if fault.kind == "budget":
                reset = self.fake.clock.now() + timedelta(hours=1)
                text = f"fake {method}: the provider's day budget is exhausted"
                if self.http.ledger is not None:
                    self.http.ledger.exhausted("day", reset, text)
                raise BudgetExhausted(text, reset_at=reset, status=429)
            if fault.kind == "lost":
                perform()  # made, and then the answer never came
            _raise(fault, method, self.fake.clock.now())
            return None

        return self.http.call(method, write, attempt)

    def _pages(self, method: str, since: datetime | None, rows: list[Any]) -> Iterator[Page[Any]]:
        """``rows`` (already in stamp order) a page a call; an empty listing is one call too."""
        size = self.fake.page_size
        pages = max(1, math.ceil(len(rows) / size))
        for number in range(1, pages + 1):
            chunk = self._call(method, since, lambda n=number: rows[(n - 1) * size : n * size])
            stamps = [r.updated_at for r in chunk if r.updated_at is not None]
            yield Page(list(chunk), cursor=max(stamps) if stamps else None, number=number)

    def _catalogue(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        """Xero's Items: every product from one call, whatever ``since`` (the job tells the
        changes by value), split into pages of ``page_size`` for the job's batches."""
        rows = self._call("changed_products", since, lambda: self._all_products())
        size = self.fake.page_size
        for number, start in enumerate(range(0, len(rows), size), start=1):
            chunk = rows[start : start + size]
            yield Page(chunk, cursor=chunk[-1].updated_at, number=number, total=len(rows))

    def _all_products(self) -> list[RemoteProduct]:
        return sorted(
            (self._product(p) for p in list(self.fake.world.products.values())),
            key=lambda r: (r.updated_at, r.remote_id),
        )

    # products and stock --------------------------------------------------------------------------
    def _version(self, stamp: datetime, version: int | None) -> datetime:
        """A record's stamp: its time, or where the provider stamps records with its change
        counter (X-Series' version), that counter carried as an instant, as its connector does."""
        if not self.capabilities.version_stamps:
            return stamp
        return EPOCH + timedelta(microseconds=version or 0)

    def _product(self, p: data.Product) -> RemoteProduct:
        stamp = p.updated_at
        if not self.fake.stock_stream:
            stamp = max(p.updated_at, p.stock_updated_at)
        stamp = self._version(stamp, data.product_revision(p))
        return RemoteProduct(
            remote_id=p.id,
            code=p.code,
            name=p.name,
            description=p.description,
            price=p.price,
            active=not p.archived,
            updated_at=stamp,
            stock=p.stock if p.tracked else None,
        )

    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        if self.capabilities.full_catalogue_call:
            return self._catalogue(since)
        rows = self._all_products()
        rows = [r for r in rows if since is None or (r.updated_at and r.updated_at > since)]
        if not self.capabilities.stock_in_product:
            rows = [replace(r, stock=None) for r in rows]
        return self._pages("changed_products", since, rows)

    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        if not self.fake.stock_stream:
            return iter(())  # stock moves the product's stamp and comes with it: no call
        rows = sorted(
            (
                RemoteStock(p.id, p.stock, p.code, stamp)
                for p in list(self.fake.world.products.values())
                if p.tracked
                and (stamp := self._version(p.stock_updated_at, data.product_revision(p)))
                and (since is None or stamp > since)
            ),
            key=lambda r: (r.updated_at, r.code),
        )
        return self._pages("changed_stock", since, rows)

    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        """One call a ``lookup_batch`` of ids (the whole catalogue in one where there is no
        batch, as Xero's Items); where stock has a stream of its own, one more call a batch for
        the stock of those found (none when none was)."""
        if not remote_ids:
            return []
        world = self.fake.world.products
        if self.capabilities.lookup_batch is None:
            everything = self._call("get_products", remote_ids, self._all_products)
            wanted = set(remote_ids)
            return [p for p in everything if p.remote_id in wanted]
        batch = self.capabilities.lookup_batch
        found: list[RemoteProduct] = []
        for start in range(0, len(remote_ids), batch):
            ids = remote_ids[start : start + batch]
            # the records as they are when the provider answers (a run that stalls after the
            # answer holds that copy, whatever changes at the provider meanwhile)
            got = self._call(
                "get_products",
                ids,
                lambda ids=ids: [self._product(world[i]) for i in ids if i in world],
            )
            if got and self.fake.stock_stream:
                self._call("get_stock", [p.remote_id for p in got], lambda: None)
            found += got
        return found

    def find_product(self, code: str) -> RemoteProduct | None:
        def read() -> RemoteProduct | None:
            p = self.fake.world.product_by_code(code)
            return self._product(p) if p is not None else None

        return self._call("find_product", code, read)

    def create_product(self, product: NewProduct) -> RemoteProduct:
        def create() -> RemoteProduct:
            if self.fake.world.product_by_code(product.code) is not None:
                raise Rejected(f"fake create_product: code {product.code!r} is in use")
            made = self.fake.catalogue.gen.add_product(
                self.fake.world, code=product.code, name=product.name, price=product.price
            )
            made.stock = Decimal(0)
            made.description = product.description or ""
            return self._product(made)

        return self._call("create_product", product, create)

    # customers -----------------------------------------------------------------------------------
    def _customer(self, c: data.Customer) -> RemoteCustomer:
        return RemoteCustomer(
            remote_id=c.id,
            name=c.name,
            email=c.email,
            account_number=c.account_number if self.fake.account_numbers else None,
            active=not c.archived,
            updated_at=self._version(c.updated_at, c.seq),
        )

    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        rows = sorted(
            (
                r
                for c in list(self.fake.world.customers.values())
                if (r := self._customer(c)).updated_at is not None
                and (since is None or r.updated_at > since)
            ),
            key=lambda r: (r.updated_at, r.remote_id),
        )
        size = self.fake.page_size
        pages = max(1, math.ceil(len(rows) / size))
        for number in range(1, pages + 1):
            chunk = self._call(
                "changed_customers", since, lambda n=number: rows[(n - 1) * size : n * size]
            )
            stamps = [r.updated_at for r in chunk if r.updated_at is not None]
            yield Page(list(chunk), cursor=max(stamps) if stamps else None, number=number)

    def get_customers(self, remote_ids: list[str]) -> list[RemoteCustomer] | None:
        """Where the real connector looks customers up by id (Xero's ``IDs=`` lists): one call a
        list of as many ids as its URL bound allows; elsewhere None, as the real one answers."""
        if self.fake.real.get_customers is Connector.get_customers:
            return None
        world = self.fake.world.customers
        found: list[RemoteCustomer] = []
        size = self.fake.real.customer_ids_a_call or len(remote_ids) or 1
        for start in range(0, len(remote_ids), size):
            ids = remote_ids[start : start + size]
            got = self._call("get_customers", ids, lambda ids=ids: [i for i in ids if i in world])
            found += [self._customer(world[i]) for i in got]
        return found

    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        def read() -> list[RemoteCustomer]:
            wanted = (email or "").strip().lower()
            return [
                self._customer(c)
                for c in self.fake.world.customers.values()
                if not c.archived
                and (
                    (wanted and (c.email or "").lower() == wanted)
                    or (account and self.fake.account_numbers and c.account_number == account)
                )
            ]

        return self._call("find_customers", (email, account), read)

    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        def create() -> RemoteCustomer:
            first, _, last = customer.name.partition(" ")
            made = self.fake.catalogue.gen.add_customer(
                self.fake.world,
                first=customer.first_name or first or customer.name,
                last=customer.last_name or last or "-",
                email=customer.email,
                account_number=customer.account_number,
            )
            if customer.email is None:
                made.email = None
            made.name = customer.name
            return self._customer(made)

        return self._call("create_customer", customer, create)

    def refinds_customer(self, email: str | None, account: str | None) -> bool:
        # the real connector's rule (Lightspeed finds a customer again by email only): it reads
        # nothing of the connector itself
        return self.fake.real.refinds_customer(self, email, account)

    # invoices ------------------------------------------------------------------------------------
    def number_taken(self, messages: list[str]) -> bool:
        return self.fake.unique_numbers and self.fake.real.number_taken(self, messages)

    @staticmethod
    def _posted(inv: data.Invoice) -> PostedInvoice:
        return PostedInvoice(inv.id, inv.number, inv.total, str(inv.body.get("status", "")))

    def find_invoice(self, number: str) -> PostedInvoice | None:
        def read() -> PostedInvoice | None:
            for inv in self.fake.world.invoices.values():
                if inv.number == number:
                    return self._posted(inv)
            return None

        return self._call("find_invoice", number, read)

    def _create_invoice(self, draft: InvoiceDraft, key: str) -> PostedInvoice:
        world = self.fake.world
        if self.capabilities.idempotency_keys and key in self.fake.keys:
            return self._posted(world.invoices[self.fake.keys[key]])  # the provider honours it
        taken = any(inv.number == draft.number for inv in world.invoices.values())
        if taken and self.fake.unique_numbers:
            raise Rejected(f"fake post_invoice: {NUMBER_TAKEN}", errors=[NUMBER_TAKEN])
        if draft.customer_remote_id not in world.customers:
            raise Rejected("fake post_invoice: no such customer")
        missing = [ln.code for ln in draft.lines if ln.product_remote_id not in world.products]
        if missing:
            raise Rejected(f"fake post_invoice: no such product {missing[0]}")
        # the provider's own total, from the lines (each line and its tax rounded half up), not
        # the shop's figure the draft carries: a test compares the two
        total = Decimal(0)
        for ln in draft.lines:
            amount = (ln.quantity * ln.unit_price).quantize(CENT, ROUND_HALF_UP)
            total += amount + (amount * ln.tax_rate).quantize(CENT, ROUND_HALF_UP)
        now = self.fake.clock.now()
        inv = data.Invoice(
            id=self.fake.catalogue.gen.uuid(),
            number=draft.number,
            customer_id=draft.customer_remote_id,
            total=total,
            body={"status": "AUTHORISED", "draft": draft, "key": key},
            created_at=now,
            updated_at=now,
            seq=world.seq(),
        )
        world.invoices[inv.id] = inv
        self.fake.keys[key] = inv.id
        return self._posted(inv)

    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        return self._call(
            "post_invoice", invoice, lambda: self._create_invoice(invoice, idempotency_key)
        )

    def post_invoices(
        self, invoices: list[tuple[InvoiceDraft, str]]
    ) -> list[PostedInvoice | Rejected | TransientError]:
        if self.capabilities.invoice_batch <= 1:
            return super().post_invoices(invoices)

        def post_all() -> list[PostedInvoice | Rejected | TransientError]:
            # one call for the batch; an invoice's own fault (``method="post_invoice"``) is
            # that invoice's outcome alone, as a plural envelope reports it
            results: list[PostedInvoice | Rejected | TransientError] = []
            for draft, key in invoices:
                fault = self.fake._fault("post_invoice", draft)
                try:
                    if fault is not None and fault.kind == "lost":
                        self._create_invoice(draft, key)
                    if fault is not None:
                        _raise(fault, "post_invoice", self.fake.clock.now())
                    results.append(self._create_invoice(draft, key))
                except (Rejected, TransientError) as err:
                    results.append(err)
            return results

        return self._call("post_invoices", invoices, post_all)

    # lists kept between runs and operations ------------------------------------------------------
    def prime(self, name: str, value: dict[str, Any]) -> None:
        self.primed[name] = value

    def ping(self) -> dict[str, Any]:
        return self._call("ping", None, lambda: {"date": self.fake.clock.now().isoformat()})

    def ids(self) -> dict[str, list[dict[str, str]]]:
        return {"tenant_id": [{"id": self.fake.tenant, "name": "Fake shop"}]}
