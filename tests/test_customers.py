"""Customers: link-customers, ensure_customer (sale time) and customers review/link/unlink/list.

The jobs' logic at scale runs against the fake provider (tests/fakes.py) lent each provider's
capabilities; the rest, and one end-to-end link per provider, run against every sandbox over real
HTTP."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fakes import FakeProvider
from sqlalchemy import func, select

from synccli import registry
from synccli.clock import SimClock
from synccli.connectors.base import InvoiceDraft, InvoiceLine
from synccli.errors import Rejected, TransientError
from synccli.sandbox import harness
from synccli.sandbox.data import Customer as SandboxCustomer
from synccli.store.db import Store
from synccli.store.models import Connection, Cursor, Customer, Link, Order, ReviewItem, Run
from synccli.sync import customers
from synccli.sync.context import job_run
from synccli.sync.duplicates import Person, find_duplicates

PROVIDERS = list(registry.suite_names())
# Lightspeed's leaky bucket drains 1 unit/s: scale its limit clock so 30 pages take no time.
# drain the leaky bucket (Lightspeed) and the 5-minute window (X-Series) fast
SCALE = {**dict.fromkeys(PROVIDERS, 1.0), "lightspeed": 200.0, "lightspeed-x": 1000.0}
# R-Series has no account number; X-Series has customer_code
ACCOUNT_NUMBERS = {"xero": True, "unleashed": True, "lightspeed": False, "lightspeed-x": True}
CLOCK = SimClock()


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


def start(provider: str, n_customers: int, **kw) -> harness.Running:
    return harness.start(
        provider, products=3, customers=n_customers, clock=CLOCK, time_scale=SCALE[provider], **kw
    )


def connect(store: Store, running: harness.Running, name: str = "shop") -> Connection:
    return harness.add_connection(store, name, running, time_scale=SCALE[running.provider])


def remote_id(provider: str, c: SandboxCustomer) -> str:
    return str(c.seq) if provider == "lightspeed" else c.id


def world_customers(running: harness.Running) -> list[SandboxCustomer]:
    app = running.app
    world = app.catalogue.tenant(app.tenant)
    return sorted(world.customers.values(), key=lambda c: c.seq)


def fake_account(provider: str, n_customers: int, **kw) -> FakeProvider:
    """A fake account lent ``provider``'s capabilities (its customers carry an account number
    where the provider's do)."""
    kw.setdefault("account_numbers", ACCOUNT_NUMBERS[provider])
    return FakeProvider(provider, products=3, customers=n_customers, clock=CLOCK, **kw)


def link_run(
    store: Store, conn: Connection, fake: FakeProvider | None = None, **kw
) -> customers.LinkReport:
    since = kw.pop("since", None)
    if fake is not None:
        kw["connector_factory"] = fake.factory
    with job_run(store, customers.JOB, conn, clock=CLOCK, **kw) as jc:
        report = customers.link_customers(jc, since)
        jc.counts = report
    return report


def customer_checksum(store: Store) -> str:
    """Every local customer column (links live elsewhere)."""
    h = hashlib.sha256()
    with store.session() as s:
        for row in s.execute(
            select(
                Customer.id,
                Customer.connection_id,
                Customer.name,
                Customer.email,
                Customer.account_number,
                Customer.first_name,
                Customer.last_name,
                Customer.created_at,
            ).order_by(Customer.id)
        ):
            h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def count(store: Store, model, *where) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def open_reviews(store: Store, kind: str) -> list[ReviewItem]:
    with store.session() as s:
        return list(
            s.scalars(
                select(ReviewItem).where(ReviewItem.kind == kind, ReviewItem.resolved_at.is_(None))
            )
        )


def fake_customer_writes(fake: FakeProvider) -> tuple[int, int, int]:
    """(writes, creates, updates) of customers at the fake: the contract's one customer write
    is a create."""
    creates = fake.calls["create_customer"]
    return creates, creates, 0


def customer_writes(app) -> tuple[int, int, int]:
    c = app.counters
    writes = sum(n for (kind, _), n in c.writes.items() if kind == "customer")
    return writes, c.creates["customer"], c.updates["customer"]


# --- link-customers at scale ----------------------------------------------------------------------
def seed_matching_world(fake: FakeProvider, store: Store, conn: Connection) -> dict:
    """3,000 remote customers; local ones: 400 matching by email (some in other case or with
    spaces), 50 by account number only, 5 pairs of local customers sharing one remote customer's
    email, 5 local customers whose email two remote customers share, and 100 matching nothing."""
    provider = fake.provider
    app = fake
    world = fake.world
    remotes = sorted(world.customers.values(), key=lambda c: c.seq)
    assert len(remotes) == 2995
    rng = random.Random(7)
    picked = rng.sample(remotes, 460)
    by_email, by_account = picked[:400], picked[400:450]
    remote_side, local_side = picked[450:455], picked[455:460]
    for c in local_side:  # a second remote customer with the same email, in other case
        app.catalogue.gen.add_customer(
            world, first=c.first_name, last=c.last_name + "son", email=c.email.upper()
        )
    assert len(world.customers) == 3000
    now = CLOCK.now()
    rows: list[Customer] = []

    def local(name: str, email: str | None, account: str | None = None) -> None:
        rows.append(
            Customer(
                connection_id=conn.id,
                name=name,
                email=email,
                account_number=account,
                first_name=name.split()[0],
                last_name=name.split()[-1],
                created_at=now,
            )
        )

    for i, c in enumerate(by_email):
        email = [c.email, c.email.upper(), f"  {c.email} ", f" {c.email.title()}\t"][i % 4]
        local(c.name, email)
    for i, c in enumerate(by_account):
        account = c.account_number if i % 2 else f" {c.account_number.lower()} "
        local(c.name, f"not-{i}@shop.local", account)
    for c in remote_side:
        local(c.name, c.email)
        local(c.name + " Jr", c.email.upper())
    for c in local_side:
        local(c.name, c.email)
    for i in range(100):
        local(f"Walk In {i}", f"walkin{i}@shop.local", f"SHOP-{i}")
    with store.session() as s:
        s.add_all(rows)
    expected = 450 if ACCOUNT_NUMBERS[provider] else 400
    return {
        "linked": expected,
        "email": {c.id for c in by_email},
        "account": {c.id for c in by_account},
        "remote_side": {f"remote:{c.id}" for c in remote_side},
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_link_customers_3000_links_450_flags_10_and_writes_no_customer(
    provider: str, store: Store
) -> None:
    # paging: Xero's Contacts pages hold 100 rows whatever pageSize asks for (as the simulator's
    # page_rows), Unleashed's 1,000, Lightspeed's 100
    pages = {"xero": 30, "unleashed": 3, "lightspeed": 30, "lightspeed-x": 4}[provider]
    fake = fake_account(provider, 2995, page_size=3000 // pages)
    conn = fake.add_connection(store)
    plan = seed_matching_world(fake, store, conn)
    checksum = customer_checksum(store)
    fake.calls.clear()

    report = link_run(store, conn, fake)

    assert report.seen == 3000
    assert report.linked == plan["linked"]
    assert report.ambiguous == 10
    assert count(store, Link, Link.kind == "customer") == plan["linked"]
    with store.session() as s:
        links = {ln.remote_id: ln for ln in s.scalars(select(Link))}
    assert set(links) == plan["email"] | (plan["account"] if ACCOUNT_NUMBERS[provider] else set())
    assert {ln.origin for ln in links.values()} == {"matched"}
    ambiguous = open_reviews(store, "ambiguous_customer")
    assert len(ambiguous) == 10
    subjects = {item.subject for item in ambiguous}
    assert plan["remote_side"] <= subjects
    assert sum(1 for s in subjects if s.startswith("local:")) == 5
    for item in ambiguous:
        assert len(item.detail["candidates"]) == 2
    # never a customer write at the provider, never a local customer field changed
    assert fake_customer_writes(fake) == (0, 0, 0)
    assert customer_checksum(store) == checksum
    # one call per page (Lightspeed's connector may add one to discover its account id)
    assert report.pages == pages
    assert pages <= report.calls <= pages + 1
    with store.session() as s:
        cursor = s.get(Cursor, (conn.id, "customers"))
        assert cursor is not None and cursor.value is not None
        run = s.scalar(select(Run).where(Run.job == customers.JOB))
        assert run.outcome == "ok" and run.counts["linked"] == plan["linked"]

    # the review sees every remote customer without a call, and blocking keeps it small
    calls = fake.total()
    rev = customers.review(store, conn)
    assert fake.total() == calls
    assert rev.remote_customers_known == 3000
    with store.session() as s:
        seen = customers.load_seen(s, conn.id)
    stats: dict[str, int] = {}
    find_duplicates([Person(k, v["name"], v["email"]) for k, v in seen.items()], stats=stats)
    assert stats["compared"] < 3000 * 2999 // 2 // 50  # under 2% of all pairs

    # a second run a day later: only the overlap re-reads the newest records (the five
    # rivals added last); nothing linked, the same 10 review items, still no write
    CLOCK.advance(days=1)
    again = link_run(store, conn, fake)
    assert again.seen <= 5 and again.linked == 0
    assert again.calls == 1
    assert len(open_reviews(store, "ambiguous_customer")) == 10
    assert fake_customer_writes(fake) == (0, 0, 0)
    assert customer_checksum(store) == checksum


@pytest.mark.parametrize("provider", PROVIDERS)
def test_link_customers_end_to_end_on_the_simulator(provider: str, store: Store) -> None:
    """The link job over HTTP against each simulator: its wire format, its paging and pacing (no
    429), and no customer written at the provider."""
    with start(provider, 250) as running:
        conn = connect(store, running)
        app = running.app
        remotes = world_customers(running)
        twin = remotes[-1]  # a second remote customer with this one's email: ambiguous
        app.catalogue.gen.add_customer(
            app.catalogue.tenant(app.tenant), first="Twin", last="Other", email=twin.email.upper()
        )
        by_email, by_account = remotes[:20], remotes[20:25]
        for c in by_email:
            add_local(store, conn, c.name, f" {c.email.upper()} ")
        for c in by_account:
            add_local(store, conn, c.name, None, account=c.account_number)
        add_local(store, conn, twin.name, twin.email)
        app.counters.reset()

        report = link_run(store, conn)

        linked = {remote_id(provider, c) for c in by_email}
        if ACCOUNT_NUMBERS[provider]:
            linked |= {remote_id(provider, c) for c in by_account}
        with store.session() as s:
            assert set(s.scalars(select(Link.remote_id))) == linked
        assert report.seen == 251 and report.linked == len(linked) and report.ambiguous == 1
        assert report.pages <= report.calls <= report.pages + 1
        assert customer_writes(app) == (0, 0, 0)
        assert app.counters.throttled == 0


# --- ensure_customer ------------------------------------------------------------------------------
def add_order(
    store: Store,
    conn: Connection,
    number: str,
    *,
    customer_id: int | None = None,
    email: str | None = None,
    account: str | None = None,
    name: str | None = None,
) -> Order:
    with store.session() as s:
        order = Order(
            connection_id=conn.id,
            number=number,
            date=CLOCK.now(),
            currency="NZD",
            customer_id=customer_id,
            customer_email=email,
            customer_account=account,
            customer_name=name,
            total=Decimal("11.50"),
            created_at=CLOCK.now(),
        )
        s.add(order)
    return order


def add_local(store: Store, conn: Connection, name: str, email: str | None, account=None) -> int:
    with store.session() as s:
        c = Customer(
            connection_id=conn.id,
            name=name,
            email=email,
            account_number=account,
            created_at=CLOCK.now(),
        )
        s.add(c)
        s.flush()
        return c.id


def ensure(
    store: Store, conn: Connection, order: Order, fake: FakeProvider | None = None, **kw
) -> tuple[str, int]:
    """(remote id, calls spent) for one order, as post-invoices would call it."""
    if fake is not None:
        kw["connector_factory"] = fake.factory
    with job_run(store, "post-invoices", conn, clock=CLOCK, **kw) as jc:
        rid = customers.ensure_customer(jc, order)
        return rid, jc.calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ensure_customer_20_orders_finds_links_and_creates_each_new_customer_once(
    provider: str, store: Store
) -> None:
    fake = fake_account(provider, 30)
    conn = fake.add_connection(store)
    remotes = sorted(fake.world.customers.values(), key=lambda c: c.seq)
    existing = remotes[:12]
    before = {c.id: (c.name, c.email, c.account_number, c.updated_at) for c in existing}
    orders: list[tuple[Order, str | None]] = []  # (order, expected remote id or None = new)
    for i, c in enumerate(existing[:6]):  # local customer exists, unlinked
        cid = add_local(store, conn, c.name, c.email.upper() if i % 2 else c.email)
        orders.append((add_order(store, conn, f"A{i}", customer_id=cid), c.id))
    for i, c in enumerate(existing[6:10]):  # only the order's email, in other case / spaces
        email = f"  {c.email.upper()} " if i % 2 else c.email
        orders.append((add_order(store, conn, f"B{i}", email=email, name=c.name), c.id))
    for i, c in enumerate(existing[10:12]):  # only the account number (email on Lightspeed)
        if ACCOUNT_NUMBERS[provider]:
            order = add_order(store, conn, f"C{i}", account=c.account_number, name=c.name)
        else:
            order = add_order(store, conn, f"C{i}", email=c.email, name=c.name)
        orders.append((order, c.id))
    # four new customers, two orders each; the first shares an existing customer's name
    new_names = [existing[0].name, "Nora Newman", "Otto Newby", "Pia Newell"]
    firsts = [
        add_order(store, conn, f"N{i}", email=f"new{i}@buyer.test", name=n)
        for i, n in enumerate(new_names)
    ]
    seconds = [
        add_order(store, conn, f"M{i}", email=f"NEW{i}@buyer.test ", name=n)
        for i, n in enumerate(new_names)
    ]
    fake.calls.clear()

    got: dict[str, str] = {}
    for order in firsts:
        got[order.number], calls = ensure(store, conn, order, fake)
        assert calls <= 4  # lookups (1-2) + create (+1 when Xero's Name must be made unique)
    for order, expected in orders:
        rid, calls = ensure(store, conn, order, fake)
        assert rid == expected, order.number
        assert 1 <= calls <= 2
    for i, order in enumerate(seconds):
        rid, calls = ensure(store, conn, order, fake)
        assert rid == got[f"N{i}"]  # the second order of a new customer creates nothing
        assert calls == 0
    for order, expected in orders:  # and a linked customer costs nothing
        assert ensure(store, conn, order, fake) == (expected, 0)

    writes, creates, updates = fake_customer_writes(fake)
    assert (creates, updates) == (4, 0)
    assert writes == 4
    # no existing remote customer was written
    assert {c.id: (c.name, c.email, c.account_number, c.updated_at) for c in existing} == before
    created = dict(fake.world.customers)
    for i in range(4):
        assert created[got[f"N{i}"]].email == f"new{i}@buyer.test"
    assert len(set(got.values())) == 4
    with store.session() as s:
        origins = [ln.origin for ln in s.scalars(select(Link).where(Link.kind == "customer"))]
    assert sorted(origins).count("matched") == 12 and origins.count("created") == 4
    assert len(open_reviews(store, "created_customer")) == 4
    # local rows: 6 existed; the 6 found by email/account and 4 new ones were created once
    assert count(store, Customer) == 6 + 6 + 4


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lost_answer_to_a_customer_create_never_creates_it_twice(
    provider: str, store: Store
) -> None:
    fake = fake_account(provider, 5)
    conn = fake.add_connection(store)
    lost = fake.fail("lost", "create_customer")
    order = add_order(store, conn, "L1", email="lost@buyer.test", name="Lou Lost")
    try:
        rid, _ = ensure(store, conn, order, fake)
    except TransientError:  # the connector could not tell: the next attempt looks it up
        rid, _ = ensure(store, conn, order, fake)
    assert lost.fired == 1
    assert fake_customer_writes(fake)[1:] == (1, 0)
    again = add_order(store, conn, "L2", email="lost@buyer.test", name="Lou Lost")
    assert ensure(store, conn, again, fake) == (rid, 0)
    assert fake_customer_writes(fake)[1:] == (1, 0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ambiguous_remote_match_is_rejected_for_review_then_linked_by_hand(
    provider: str, store: Store, cli
) -> None:
    with start(provider, 5) as running:
        app = running.app
        conn = connect(store, running)
        world = app.catalogue.tenant(app.tenant)
        a = app.catalogue.gen.add_customer(world, first="Ann", last="Twin", email="twin@x.test")
        b = app.catalogue.gen.add_customer(world, first="Anne", last="Twin", email="TWIN@x.test")
        order = add_order(store, conn, "T1", email="twin@x.test", name="Ann Twin")
        app.counters.reset()
        with pytest.raises(Rejected, match="matches 2 customers"):
            ensure(store, conn, order)
        assert customer_writes(app) == (0, 0, 0)
        assert count(store, Link) == 0
        (item,) = open_reviews(store, "ambiguous_customer")
        local_id = int(item.subject.split(":")[1])
        ids = {remote_id(provider, a), remote_id(provider, b)}
        assert {c["remote_id"] for c in item.detail["candidates"]} == ids
        # the merchant links the right one; the invoice goes out on the next attempt, no call
        result = cli("customers", "link", "-c", "shop", str(local_id), remote_id(provider, a))
        assert result.exit_code == 0, result.stderr
        assert open_reviews(store, "ambiguous_customer") == []
        assert ensure(store, conn, order) == (remote_id(provider, a), 0)


def test_xero_invoice_contact_carries_only_the_contact_id(store: Store) -> None:
    with start("xero", 10) as running:
        app = running.app
        conn = connect(store, running)
        existing = world_customers(running)[0]
        product = next(iter(app.catalogue.tenant(app.tenant).products.values()))
        orders = [
            add_order(store, conn, "X1", email=existing.email, name=existing.name),  # found
            add_order(store, conn, "X2", email="fresh@buyer.test", name=existing.name),  # created
        ]
        app.counters.reset()
        with job_run(store, "post-invoices", conn, clock=CLOCK) as jc:
            for order in orders:
                contact_id = customers.ensure_customer(jc, order)
                draft = InvoiceDraft(
                    number=order.number,
                    date=order.date,
                    currency="NZD",
                    customer_remote_id=contact_id,
                    lines=[
                        InvoiceLine(
                            product.id,
                            product.code,
                            "Mug",
                            Decimal("1"),
                            Decimal("10.00"),
                            tax_code="OUTPUT2",
                            tax_rate=Decimal("0.15"),
                        )
                    ],
                )
                jc.connector.post_invoice(draft, f"key-{order.number}")
        invoices = [r for r in app.counters.requests if r["kind"] == "invoice"]
        assert len(invoices) == 2
        for req in invoices:
            contact = req["body"]["Contact"]
            assert list(contact) == ["ContactID"]
        assert invoices[0]["body"]["Contact"]["ContactID"] == existing.id
        assert app.counters.updates["customer"] == 0
        assert app.counters.writes[("customer", existing.id)] == 0


# --- customers review: near duplicates ------------------------------------------------------------
# A background of distinct customers whose names come from pools disjoint from the generator's
# (so the background has realistic name diversity: the generator's 30 x 28 names would make every
# name recur at a few hundred customers), plus pairs planted with Generator.add_near_duplicate.
BG_FIRST = [
    "Aaron",
    "Abigail",
    "Adrian",
    "Aiden",
    "Alice",
    "Andrew",
    "Anna",
    "Arthur",
    "Beatrice",
    "Benjamin",
    "Caleb",
    "Caroline",
    "Charlotte",
    "Daniel",
    "Edward",
    "Eleanor",
    "Elijah",
    "Felix",
    "Florence",
    "Gabriel",
    "Hannah",
    "Harriet",
    "Isaac",
    "Ivy",
    "Jasmine",
    "Joseph",
    "Julia",
    "Kevin",
    "Laura",
    "Madison",
    "Matthew",
    "Michael",
    "Naomi",
    "Nathan",
    "Nicholas",
    "Owen",
    "Patrick",
    "Penelope",
    "Quentin",
    "Rachel",
    "Rebecca",
    "Robert",
    "Scarlett",
    "Sebastian",
    "Sophie",
    "Stella",
    "Theodore",
    "Tobias",
    "Ursula",
    "Victoria",
    "Vincent",
    "William",
    "Xavier",
    "Yvonne",
    "Zachary",
    "Beth",
    "Carl",
    "Diana",
    "Frank",
    "Georgia",
]
BG_LAST = [
    "Abbott",
    "Ashworth",
    "Barnes",
    "Bennett",
    "Blackwood",
    "Bradley",
    "Burke",
    "Chambers",
    "Chapman",
    "Clarke",
    "Coleman",
    "Cooper",
    "Crawford",
    "Cunningham",
    "Dawson",
    "Dixon",
    "Donovan",
    "Douglas",
    "Ellis",
    "Farrell",
    "Ferguson",
    "Fleming",
    "Fletcher",
    "Foster",
    "Fraser",
    "Gallagher",
    "Gibson",
    "Gordon",
    "Graham",
    "Griffin",
    "Hamilton",
    "Hancock",
    "Hartley",
    "Hawkins",
    "Hayes",
    "Holland",
    "Hopkins",
    "Hughes",
    "Hunter",
    "Jennings",
    "Jordan",
    "Kavanagh",
    "Kennedy",
    "Lambert",
    "Lawrence",
    "Lindqvist",
    "Lloyd",
    "Lynch",
    "Macdonald",
    "Marshall",
    "McCarthy",
    "Mercer",
    "Morgan",
    "Murphy",
    "Newman",
    "Norris",
    "O'Connor",
    "Palmer",
    "Patterson",
    "Pearson",
    "Perkins",
    "Porter",
    "Quinn",
    "Reynolds",
    "Richardson",
    "Robertson",
    "Russell",
    "Sanders",
    "Shepherd",
    "Simmons",
    "Stevens",
    "Sullivan",
    "Sutton",
    "Townsend",
    "Tucker",
    "Vaughan",
    "Wallace",
    "Warren",
    "Watson",
    "Webster",
    "Whitfield",
    "Wilkinson",
    "Woodward",
    "Yates",
    "Zimmerman",
]


def seed_near_duplicates(running: harness.Running, background: int, planted: int) -> set:
    app = running.app
    world = app.catalogue.tenant(app.tenant)
    gen = app.catalogue.gen
    rng = random.Random(11)
    names = rng.sample([(f, last) for f in BG_FIRST for last in BG_LAST], background)
    for first, last in names:
        gen.add_customer(world, first=first, last=last)
    pairs = set()
    for _ in range(planted):
        a, b = gen.add_near_duplicate(world)
        pairs.add(frozenset((remote_id(running.provider, a), remote_id(running.provider, b))))
    return pairs


@pytest.mark.parametrize("provider", PROVIDERS)
def test_review_finds_planted_near_duplicates_with_few_false_pairs(
    provider: str, store: Store, cli
) -> None:
    with start(provider, 0) as running:
        planted = seed_near_duplicates(running, background=200, planted=20)
        conn = connect(store, running)
        link_run(store, conn)  # reads every remote customer once; the review spends nothing
        calls = running.app.counters.total()
        result = cli("customers", "review", "-c", "shop", "--json")
        assert result.exit_code == 0, result.stderr
        assert running.app.counters.total() == calls
        (report,) = json.loads(result.stdout)
        listed = [
            frozenset((p["a"]["remote_id"], p["b"]["remote_id"])) for p in report["duplicates"]
        ]
        assert len(set(listed)) == len(listed)
        found = planted & set(listed)
        false = [p for p in listed if p not in planted]
        assert len(found) >= 0.9 * len(planted), (len(found), len(planted))
        assert len(false) <= 0.1 * len(listed), [
            (p["a"]["name"], p["b"]["name"], p["reasons"])
            for p in report["duplicates"]
            if frozenset((p["a"]["remote_id"], p["b"]["remote_id"])) not in planted
        ]
        for p in report["duplicates"]:
            assert 0 < p["score"] <= 100 and p["reasons"]


# --- link-customers: rivals across pages, cursor, dry run -----------------------------------------
@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "unleashed"])
def test_a_rival_on_a_later_page_undoes_the_link_made_on_an_earlier_one(
    provider: str, store: Store
) -> None:
    """Pages come oldest first: the local customer's match is on page 1, a second remote customer
    with the same email (created later) on the last page. No guess: no link, one review item."""
    size = 1000 if provider == "lightspeed-x" else 100  # rows a page holds (Xero: page_rows)
    with start(provider, size + 5) as running:
        app = running.app
        conn = connect(store, running)
        world = app.catalogue.tenant(app.tenant)
        first = world_customers(running)[0]
        lid = add_local(store, conn, first.name, first.email)
        CLOCK.advance(hours=1)
        app.catalogue.gen.add_customer(
            world, first="Rival", last="Newer", email=first.email.upper()
        )
        report = link_run(store, conn)
        assert report.pages == 2
        assert report.linked == 0 and report.unlinked_rivals == 1 and report.ambiguous == 1
        assert count(store, Link) == 0
        (item,) = open_reviews(store, "ambiguous_customer")
        assert item.subject == f"local:{lid}" and len(item.detail["candidates"]) == 2
        # the merchant archives the duplicate at the provider: the next run links the survivor
        CLOCK.advance(hours=1)
        rival = max(world.customers.values(), key=lambda c: c.seq)
        rival.archived, rival.updated_at = True, CLOCK.now()
        if provider == "lightspeed":  # R-Series hides archived customers from the list
            rival.email = None  # so "archive" here means the merchant removed the address
            rival.archived = False
        report = link_run(store, conn)
        assert report.linked == 1
        with store.session() as s:
            link = s.scalar(select(Link))
            assert (link.local_id, link.remote_id) == (lid, remote_id(provider, first))
        assert open_reviews(store, "ambiguous_customer") == []


def test_cursor_reads_only_changes_and_since_overrides_it(store: Store) -> None:
    with start("xero", 50) as running:
        app = running.app
        conn = connect(store, running)
        link_run(store, conn)
        CLOCK.advance(days=1)
        world = app.catalogue.tenant(app.tenant)
        newcomer = app.catalogue.gen.add_customer(world, first="Cora", last="Late")
        add_local(store, conn, "Cora Late", f"  {newcomer.email.upper()}")
        CLOCK.advance(minutes=5)
        report = link_run(store, conn)
        # the newcomer, plus what the 5 s overlap re-reads (customers 1 s apart at the old end)
        assert report.linked == 1 and 1 < report.seen <= 6
        report = link_run(store, conn, since=datetime(2025, 1, 1, tzinfo=UTC))
        assert report.seen == 51 and report.already_linked == 1 and report.linked == 0


def test_dry_run_reads_and_reports_but_writes_nothing(store: Store, cli) -> None:
    with harness.start("unleashed", products=2, customers=40) as running:
        conn = connect(store, running)
        for c in world_customers(running)[:7]:
            add_local(store, conn, c.name, c.email.upper())

        def rows() -> dict[str, int]:
            return {m.__tablename__: count(store, m) for m in (Link, ReviewItem, Cursor, Run)}

        before = rows()
        result = cli("link-customers", "-c", "shop", "--dry-run", "--json")
        assert result.exit_code == 0, result.stderr
        (out,) = json.loads(result.stdout)
        assert out["report"]["dry_run"] is True and out["report"]["linked"] == 7
        assert len(out["report"]["would_link"]) == 7
        assert rows() == before
        text = cli("link-customers", "-c", "shop", "--dry-run")
        assert text.exit_code == 0 and "would link 7" in text.stdout


def test_cli_link_customers_list_link_unlink_and_review(store: Store, cli) -> None:
    with harness.start("unleashed", products=2, customers=40) as running:
        app = running.app
        conn = connect(store, running)
        remotes = world_customers(running)
        for c in remotes[:5]:
            add_local(store, conn, c.name, c.email)
        walk_in = add_local(store, conn, "Walk In", "walkin@shop.local")
        result = cli("link-customers", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        assert "linked 5" in result.stdout and "ambiguous 0" in result.stdout

        listed = json.loads(cli("customers", "list", "-c", "shop", "--unlinked", "--json").stdout)
        assert [r["local_id"] for r in listed] == [walk_in]
        target = remotes[20]
        out = cli("customers", "link", "-c", "shop", "walkin@shop.local", target.id)
        assert out.exit_code == 0, out.stderr
        assert f"#{walk_in}" in out.stdout and target.name in out.stdout
        dup = cli("customers", "link", "-c", "shop", str(walk_in), remotes[21].id)
        assert dup.exit_code == 2 and "unlink" in dup.stderr
        taken = cli("customers", "link", "-c", "shop", str(walk_in - 1), target.id)
        assert taken.exit_code == 2
        unknown = cli("customers", "unlink", "-c", "shop", "999999")
        assert unknown.exit_code == 2 and "no local customer" in unknown.stderr
        assert cli("customers", "unlink", "-c", "shop", str(walk_in)).exit_code == 0
        listed = json.loads(cli("customers", "list", "-c", "shop", "--json").stdout)
        assert sum(1 for r in listed if r["remote_id"]) == 5
        assert {r["origin"] for r in listed if r["remote_id"]} == {"matched"}

        review = cli("customers", "review", "-c", "shop")
        assert review.exit_code == 0, review.stderr
        assert "0 ambiguous" in review.stdout and "remote customers" in review.stdout
        assert customer_writes(app) == (0, 0, 0)


def test_every_customer_command_has_help_with_an_example(cli) -> None:
    for args in (
        ["link-customers"],
        ["customers"],
        ["customers", "review"],
        ["customers", "link"],
        ["customers", "unlink"],
        ["customers", "list"],
    ):
        result = cli(*args, "--help")
        assert result.exit_code == 0, args
        assert "Example:" in result.stdout, args


def test_review_resolve_marks_items_done(store: Store, cli) -> None:
    with start("unleashed", 5) as running:
        conn = connect(store, running)
        order = add_order(store, conn, "R1", email="brand-new@buyer.test", name="Brand New")
        ensure(store, conn, order)
        out = json.loads(cli("customers", "review", "-c", "shop", "--json").stdout)
        (created,) = out[0]["created"]
        assert created["detail"]["order"] == "R1"
        done = cli("customers", "review", "-c", "shop", "--resolve", str(created["id"]), "--json")
        assert done.exit_code == 0
        assert json.loads(done.stdout)[0]["created"] == []
        bad = cli("customers", "review", "-c", "shop", "--resolve", "424242")
        assert bad.exit_code == 2


# --- PostgreSQL -----------------------------------------------------------------------------------
def test_postgres_two_workers_racing_for_one_new_customer_create_it_once(pg_store: Store) -> None:
    import threading

    store = pg_store
    with start("unleashed", 5) as running:
        app = running.app
        conn = connect(store, running)
        orders = [
            add_order(store, conn, f"P{i}", email="race@buyer.test", name="Rae Race")
            for i in range(2)
        ]
        # the local customer exists (as `invoices add` would have made it); both orders name it
        cid = add_local(store, conn, "Rae Race", "race@buyer.test")
        for o in orders:
            o.customer_id = cid
        with store.session() as s:
            for o in orders:
                s.get(Order, o.id).customer_id = cid
        results: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def worker(order: Order) -> None:
            try:
                barrier.wait()
                with job_run(store, "post-invoices", conn, clock=CLOCK, lease=False) as jc:
                    results.append(customers.ensure_customer(jc, order))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(results) == 2 and results[0] == results[1]
        assert customer_writes(app)[1:] == (1, 0)
        assert count(store, Link) == 1


def test_postgres_link_customers_and_ensure(pg_store: Store) -> None:
    store = pg_store
    with start("xero", 60) as running:
        conn = connect(store, running)
        remotes = world_customers(running)
        for c in remotes[:10]:
            add_local(store, conn, c.name, c.email.upper())
        report = link_run(store, conn)
        assert report.linked == 10
        order = add_order(store, conn, "PG1", email="pg@buyer.test", name="Pat Gres")
        rid, _ = ensure(store, conn, order)
        again = add_order(store, conn, "PG2", email="PG@buyer.test", name="Pat Gres")
        assert ensure(store, conn, again) == (rid, 0)
        assert customer_writes(running.app)[1:] == (1, 0)


def test_ensure_customer_in_a_dry_run_looks_up_but_writes_nothing(store: Store) -> None:
    with start("unleashed", 5) as running:
        conn = connect(store, running)
        known = world_customers(running)[0]
        found = add_order(store, conn, "D1", email=known.email, name=known.name)
        new = add_order(store, conn, "D2", email="dry@buyer.test", name="Dee Dry")
        locals_before = count(store, Customer)
        assert ensure(store, conn, found, dry_run=True)[0] == known.id
        assert ensure(store, conn, new, dry_run=True)[0] == customers.DRY_RUN_REMOTE_ID
        assert count(store, Customer) == locals_before
        assert count(store, Link) == count(store, ReviewItem) == 0
        assert customer_writes(running.app) == (0, 0, 0)


def test_a_link_made_elsewhere_during_the_run_does_not_sink_the_page(store: Store) -> None:
    """ensure_customer (or a person) links a customer while link-customers is between pages."""
    with start("lightspeed", 150) as running:
        conn = connect(store, running)
        remotes = world_customers(running)
        early, late = remotes[0], remotes[140]  # page 1 and page 2 (oldest first)
        add_local(store, conn, early.name, early.email)
        late_local = add_local(store, conn, late.name, late.email)

        def meanwhile(report: customers.LinkReport) -> None:
            if report.pages == 1:
                customers.link_manual(
                    store, conn, str(late_local), "by-hand-1", CLOCK.now(), force=True
                )

        with job_run(store, customers.JOB, conn, clock=CLOCK) as jc:
            report = customers.link_customers(jc, on_page=meanwhile)
        assert report.pages == 2 and report.linked == 1 and report.raced == 1
        with store.session() as s:
            links = {ln.local_id: (ln.remote_id, ln.origin) for ln in s.scalars(select(Link))}
        assert links[late_local] == ("by-hand-1", "manual")
        assert len(links) == 2
