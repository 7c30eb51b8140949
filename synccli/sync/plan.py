"""``plan``: what a cron schedule will spend, per job, against each provider's limits.

Merchants underestimate how many calls a sync takes; this model tells them before the provider
does. It counts calls the way the connectors make them (page sizes, batch sizes, lookups at sale
time), so the month simulation in ``bench/month.py`` can check it.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from synccli import fmt, registry
from synccli.errors import UsageError
from synccli.sync.jobs import SCHEDULED, Job


@dataclass(frozen=True)
class ProviderModel:
    name: str
    per_day: int | None
    per_month: int | None
    item_page: int | None  # products per page of a changed-products read (None: one call for all)
    stock_page: int | None  # stock rows per page (None: stock comes with products)
    customer_page: int
    lookup_batch: int | None  # ids per call when sweeping (None: the whole catalogue in one call)
    sweep_calls_per_batch: int  # 2 where stock is a separate read
    post_calls: float  # calls to post one invoice (lookups the provider needs included)
    find_product: int = 1
    create_product: int = 1
    find_customer: int = 2  # by email, then by account number
    create_customer: int = 1
    per_day_overhead: float = 0.0  # post-invoices: lists read once a day (tax categories)
    invoice_batch: int = 1  # invoices one post call carries
    catalogue_page: int | None = None  # products a page when a sweep lists the whole catalogue
    display_name: str = ""
    # hours every pull reads again before its interval: the cursor's overlap, plus how far
    # behind the provider's stamps read (Unleashed: 14 h + 13 h)
    reread_hours: float = 0.0
    # a run's new customers looked up in one call and created in one, its new products created
    # in one (dependency_batch)
    batched_dependencies: bool = False
    # an order's documents beyond its invoice (issue 22): payments applied after the invoice,
    # this many a call (0: none, or carried in the sale at no extra call), and the calls of one
    # refund (0: the provider takes none)
    payment_batch: int = 0
    refund_calls: int = 0
    # hours a connection's payments wait for more before they go (the oldest that long, or a
    # full batch): the setting ``payments_wait_hours``' default where the provider has it
    payments_wait_hours: float = 0.0


WAIT_SETTING = "payments_wait_hours"


def _wait_default(entry: registry.Provider) -> float:
    """The provider's default ``payments_wait_hours`` (0 where it has no such setting: every
    run that posts invoices with payments applies them)."""
    setting = next((s for s in entry.settings if s.key == WAIT_SETTING), None)
    try:
        return float(setting.default or 0) if setting else 0.0
    except ValueError:
        return 0.0


def model(provider: str) -> ProviderModel:
    """How ``provider`` spends calls, read from its registry entry: the connector's limits and
    capabilities, and the call pattern the registry declares beside them."""
    if provider not in registry.names():
        raise UsageError(
            f"unknown provider {provider!r}: choose one of {', '.join(registry.names())}"
        )
    entry = registry.get(provider)
    caps, limits, calls = entry.capabilities, entry.limits, entry.calls
    page = caps.catalogue_page
    # where a pull reads the whole catalogue and the provider refuses a code it has, a product
    # the last pull did not see is created without a look-up first (post-invoices, #21)
    create_first = caps.dependency_batch and caps.full_catalogue_call
    return ProviderModel(
        provider,
        limits.per_day,
        limits.per_month,
        item_page=None if caps.full_catalogue_call else page,
        stock_page=page if calls.stock_changes_read else None,
        customer_page=calls.customer_page,
        lookup_batch=caps.lookup_batch,
        # a look-up by id reads stock apart where products do not carry it
        sweep_calls_per_batch=1 if caps.stock_in_product else 2,
        # A sale is looked up by reference only after an unclear answer, not before every post.
        post_calls=1,
        per_day_overhead=calls.daily_list_calls,
        invoice_batch=caps.invoice_batch,
        catalogue_page=page,
        display_name=entry.display_name,
        find_product=0 if create_first else 1,
        # one combined look-up (email OR account number) where the provider can OR them
        find_customer=1 if caps.dependency_batch else 2,
        reread_hours=(caps.cursor_overlap + calls.stamp_lag).total_seconds() / 3600,
        batched_dependencies=caps.dependency_batch,
        payment_batch=calls.payment_batch if caps.documents.payments == "applied" else 0,
        refund_calls=calls.refund_calls if caps.documents.refunds != "none" else 0,
        payments_wait_hours=_wait_default(entry),
    )


SWEEP_DAYS = 7  # sweep-oldest auto: the whole catalogue re-checked within a week

JOBS: tuple[str, ...] = SCHEDULED


@dataclass
class Merchant:
    products: int
    customers: int
    orders_per_day: int
    product_change_rate: float = 0.02  # share of products whose price/description changes a day
    stock_change_rate: float = 0.05  # share whose stock moves a day
    new_customers_per_day: int = 20
    unknown_share: float = 0.10  # orders with a product or customer the provider lacks
    # the merchant mix (issue 22, bench/month.py's default): orders with payments, and orders
    # refunded (each refund a document of its own, posted a day later), where the provider
    # takes them
    payment_share: float = 0.9
    refund_share: float = 0.03
    # the connection's ``payments_wait_hours`` (None: each provider's default)
    payments_wait_hours: float | None = None


@dataclass
class Entry:
    """One job line of a schedule."""

    job: str
    runs_per_day: int
    max_gap_minutes: float
    argument: str | None = None  # sweep-oldest N


@dataclass
class JobCost:
    job: str
    runs_per_day: int
    calls_per_day: float
    calls_per_month: float
    note: str = ""


@dataclass
class PlanReport:
    provider: str
    jobs: list[JobCost]
    calls_per_day: float
    calls_per_month: float
    limit_day: int | None
    limit_month: int | None
    freshness_minutes: float | None
    sweep_days: float | None  # days to sweep the whole catalogue once
    warnings: list[str] = field(default_factory=list)
    proposal: list[str] = field(default_factory=list)
    over_budget: bool = False  # more calls than the provider's day or month limit


DEFAULT_SCHEDULE = [
    Entry(Job.PULL_PRODUCTS, 48, 30),
    Entry(Job.SWEEP_OLDEST, 4, 360, "auto"),
    Entry(Job.LINK_CUSTOMERS, 4, 360),
    Entry(Job.POST_INVOICES, 24, 60),
]


def _field_values(spec: str, low: int, high: int) -> list[int]:
    values: set[int] = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = end = int(part)
            if step != 1:
                end = high
        values.update(range(start, end + 1, step))
    return sorted(v for v in values if low <= v <= high)


def parse_crontab(text: str) -> list[Entry]:
    """Job lines of a crontab: how often each synccli job runs a day, and its longest gap."""
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or "=" in line.split()[0]:
            continue
        parts = line.split(None, 5)
        if len(parts) < 6:
            raise UsageError(f"crontab line {number}: expected 5 time fields and a command")
        minute, hour = parts[0], parts[1]
        words = shlex.split(parts[5])
        job = next((w for w in words if w in JOBS), None)
        if job is None:
            continue
        try:
            minutes = _field_values(minute, 0, 59)
            hours = _field_values(hour, 0, 23)
        except ValueError:
            raise UsageError(f"crontab line {number}: cannot read the time fields") from None
        times = sorted(h * 60 + m for h in hours for m in minutes)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)] + [
            times[0] + 1440 - times[-1]
        ]
        arg = None
        if job == Job.SWEEP_OLDEST:
            i = words.index(job)
            arg = words[i + 1] if i + 1 < len(words) else None
        entries.append(Entry(job, len(times), float(max(gaps)), arg))
    if not entries:
        raise UsageError("the crontab has no synccli job lines")
    return entries


def load_schedule(path: Path | None) -> list[Entry]:
    if path is None:
        return DEFAULT_SCHEDULE
    try:
        return parse_crontab(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read crontab {path}: {exc.strerror}") from None


def _pages(n: float, page: int | None) -> int:
    """Calls to read ``n`` records a page at a time: at least one (the call that finds none)."""
    if page is None:
        return 1
    return max(1, math.ceil(n / page))


def plan(provider: str, merchant: Merchant, schedule: list[Entry]) -> PlanReport:
    """Calls a day and a month for ``schedule`` at ``provider`` for ``merchant``; when it does not
    fit the provider's limits (or freshness and sweep aims), a proposed schedule that does."""
    report = _cost(provider, merchant, schedule)
    if report.warnings:
        report.proposal = propose(provider, merchant)
    return report


def _cost(provider: str, merchant: Merchant, schedule: list[Entry]) -> PlanReport:
    m = model(provider)
    jobs: list[JobCost] = []
    freshness = None
    sweep_per_day = 0.0
    calls: float  # a day's calls: whole in most jobs, a fraction where a cost is averaged
    for entry in schedule:
        runs = max(1, entry.runs_per_day)
        if entry.job == Job.PULL_PRODUCTS:
            # a pull reads what changed since its cursor less the overlap: its interval and
            # the re-read hours before it (a product changed twice in them is read once)
            hours = 24 / runs + m.reread_hours
            changed = _distinct(merchant.products, merchant.product_change_rate, hours)
            moved = _distinct(merchant.products, merchant.stock_change_rate, hours)
            per_run = _pages(changed, m.item_page)
            if m.stock_page is not None:
                per_run += _pages(moved, m.stock_page)
            calls = per_run * runs
            freshness = (
                entry.max_gap_minutes
                if freshness is None
                else min(freshness, entry.max_gap_minutes)
            )
            note = f"{per_run} call(s) a run"
        elif entry.job == Job.SWEEP_OLDEST and _pulls_sweep(m, schedule):
            # every pull reads the whole catalogue and flags what is gone from it, and the day's
            # first checks it as a sweep would: the sweep finds it done (sync/products.py)
            calls, note = 0, "0 calls: each pull reads the whole catalogue and flags ghosts"
            sweep_per_day += merchant.products
        elif entry.job == Job.SWEEP_OLDEST:
            n = _sweep_n(entry.argument, m, merchant, schedule)
            per_run = _by_id_calls(m, n)
            calls = per_run * runs
            covered: float = (merchant.products if m.lookup_batch is None else n) * runs
            auto = not (entry.argument and entry.argument.isdigit())
            if auto:
                # `auto` reads whatever would go unread past the week (whole batches of the
                # share, more when due) and the pulls read some: the week is covered
                covered = max(covered, merchant.products / SWEEP_DAYS)
            note = f"{n} products a run, {per_run} call(s)"
            full = _catalogue_calls(m, merchant.products)
            listing = _listing_calls(m, merchant.products)
            # `auto`: where one listing of the whole catalogue (and its stock) costs fewer
            # calls than all of it by id, it is listed once every SWEEP_DAYS and nothing is
            # swept between
            if auto and listing is not None and listing < _by_id_calls(m, merchant.products):
                calls = listing / SWEEP_DAYS
                covered = merchant.products / SWEEP_DAYS
                note = (
                    f"the whole catalogue ({merchant.products}) {fmt.every_days(SWEEP_DAYS)}, "
                    f"{listing} call(s)"
                )
                full = None
            share = math.ceil(merchant.products / SWEEP_DAYS) if auto else n
            if full is not None and n and full < _by_id_calls(m, share):
                passes = 1 if auto else runs
                calls, covered = full * passes, merchant.products * passes
                note = (
                    f"the whole catalogue ({merchant.products}), "
                    f"{fmt.number(round(full, 1))} call(s) a day"
                )
            sweep_per_day += covered
        elif entry.job == Job.LINK_CUSTOMERS:
            per_run = _pages(merchant.new_customers_per_day / runs, m.customer_page)
            calls = per_run * runs
            note = f"{per_run} call(s) a run"
        else:  # post-invoices
            calls, note = _post_cost(m, merchant, runs)
        jobs.append(JobCost(entry.job, runs, round(calls, 1), round(calls * 30, 1), note))
    per_day = sum(j.calls_per_day for j in jobs)
    report = PlanReport(
        provider=provider,
        jobs=jobs,
        calls_per_day=round(per_day, 1),
        calls_per_month=round(per_day * 30, 1),
        limit_day=m.per_day,
        limit_month=m.per_month,
        freshness_minutes=freshness,
        sweep_days=round(merchant.products / sweep_per_day, 1) if sweep_per_day else None,
    )
    if m.per_day and per_day > m.per_day:
        report.over_budget = True
        report.warnings.append(
            f"{per_day:.0f} calls a day exceed {m.display_name}'s {m.per_day} a day"
        )
    if m.per_month and per_day * 30 > m.per_month:
        report.over_budget = True
        report.warnings.append(
            f"{per_day * 30:.0f} calls a month exceed the quota of {m.per_month}"
        )
    if freshness is not None and freshness > 120:
        report.warnings.append(
            f"a product change may take {freshness:.0f} minutes to show (aim: 30)"
        )
    if report.sweep_days is not None and report.sweep_days > 7:
        report.warnings.append(
            f"the whole catalogue is swept only {fmt.every_days(report.sweep_days)} (aim: 7)"
        )
    return report


def _distinct(products: int, rate: float, hours: float) -> float:
    """Products changed at least once in ``hours`` when ``rate`` of them change a day, each
    change at a random product and time."""
    return products * (1 - math.exp(-rate * hours / 24))


def _dependency_calls(m: ProviderModel, unknown: float, active_runs: int) -> float:
    """Look-ups and creates a day for the orders naming a product or customer the provider
    lacks (half each). Where a run's dependencies go together, a run with any new customer
    spends one look-up and one create, with any new product one create."""
    products, customers = unknown / 2, unknown / 2
    if not (m.batched_dependencies and active_runs):
        return products * (m.find_product + m.create_product) + customers * (
            m.find_customer + m.create_customer
        )

    def runs_with(n: float) -> float:  # runs that meet at least one (spread at random)
        return active_runs * (1 - math.exp(-n / active_runs))

    return runs_with(products) * (min(1, m.find_product) + min(1, m.create_product)) + runs_with(
        customers
    ) * (min(1, m.find_customer) + min(1, m.create_customer))


def _post_cost(m: ProviderModel, merchant: Merchant, runs: int) -> tuple[float, str]:
    """post-invoices' calls a day for ``runs`` runs a day, and how they go."""
    unknown = merchant.orders_per_day * merchant.unknown_share
    per_order = m.post_calls
    active_runs = min(runs, merchant.orders_per_day)
    lookups = _dependency_calls(m, unknown, active_runs)
    posts: float
    if m.invoice_batch > 1 and active_runs:
        orders_per_run = merchant.orders_per_day / active_runs
        posts = active_runs * math.ceil(orders_per_run / m.invoice_batch)
        note = f"up to {m.invoice_batch} invoices a call"
    else:
        posts = merchant.orders_per_day * per_order
        note = f"{fmt.number(per_order)} call(s) an order"
    calls = posts + lookups + (m.per_day_overhead if active_runs else 0)
    note += f", {fmt.tenths(lookups)} lookups/creates a day"
    paying = _payment_calls(m, merchant, runs)
    refunds = merchant.orders_per_day * merchant.refund_share if m.refund_calls else 0
    if paying:
        calls += paying
        note += f", {fmt.number(round(paying, 1))} payment call(s) a day"
    if refunds:
        calls += refunds * m.refund_calls
        note += f", {fmt.number(m.refund_calls)} call(s) a refund"
    return calls, note


def _payment_calls(m: ProviderModel, merchant: Merchant, runs: int) -> float:
    """Calls a day applying payments after their invoices, ``m.payment_batch`` a call. A run
    that posts invoices with payments applies them (and every payment waiting) once the oldest
    has waited the connection's ``payments_wait_hours``, or at once where that is 0; a full
    batch goes without waiting. So a call every run that posts any payment, or every wait
    (rounded up to the schedule's runs) plus the runs until the next payment comes: whichever
    is more, that or one call per full batch."""
    if not m.payment_batch or not runs:
        return 0.0
    payments = merchant.orders_per_day * merchant.payment_share
    if payments <= 0:
        return 0.0
    wait = merchant.payments_wait_hours
    if wait is None:
        wait = m.payments_wait_hours
    posting = 1 - math.exp(-payments / runs)  # the chance a run posts a paid order's invoice
    waited = math.ceil(wait / (24 / runs) - 1e-9) if wait > 0 else 0  # runs the oldest waits
    carrying = runs / (1 / posting + waited)
    return max(carrying, payments / m.payment_batch)


def _listing_calls(m: ProviderModel, products: int) -> int | None:
    """Calls to list the whole catalogue and, where stock is a list apart, every stock position
    (None where a sweep cannot list it in pages)."""
    if not m.catalogue_page or m.lookup_batch is None:
        return None
    return max(1, math.ceil(products / m.catalogue_page)) * m.sweep_calls_per_batch


def _pulls_sweep(m: ProviderModel, schedule: list[Entry]) -> bool:
    """Whether the schedule's pulls do the sweep's work: where one call reads the whole
    catalogue, a pull at least once a day."""
    return m.item_page is None and any(
        e.job == Job.PULL_PRODUCTS and e.runs_per_day >= 1 for e in schedule
    )


def _by_id_calls(m: ProviderModel, n: int) -> int:
    batches = 1 if m.lookup_batch is None else math.ceil(n / m.lookup_batch)
    return batches * m.sweep_calls_per_batch if n else 0


def _catalogue_calls(m: ProviderModel, products: int) -> float | None:
    """Calls a day to list the whole catalogue page by page (None where not modelled). Where
    stock is a separate list, its pages are read once per SWEEP_DAYS, not daily."""
    if not m.catalogue_page or m.lookup_batch is None:
        return None
    pages = max(1, math.ceil(products / m.catalogue_page))
    return pages + (pages / SWEEP_DAYS if m.sweep_calls_per_batch > 1 else 0)


def _sweep_n(arg: str | None, m: ProviderModel, merchant: Merchant, schedule: list[Entry]) -> int:
    """Products a sweep run checks. ``auto`` checks a seventh of the catalogue a day (the first
    run of the day does it; later runs find today's share done), or the whole catalogue where
    one call reads it all."""
    runs = next((e.runs_per_day for e in schedule if e.job == Job.SWEEP_OLDEST), 1)
    if arg and arg.isdigit():
        return min(int(arg), merchant.products)
    if m.lookup_batch is None:
        return merchant.products
    share = math.ceil(math.ceil(merchant.products / SWEEP_DAYS) / max(1, runs))
    # By id a run takes whole batches of its share and more only for products that would
    # otherwise go unread past the week (sync/products.py _by_id_share). The pulls' reads stamp
    # products as checked; where they read at least the week's shortfall, whole batches do.
    whole = share // m.lookup_batch * m.lookup_batch
    pulled = any(e.job == Job.PULL_PRODUCTS for e in schedule)
    rate = merchant.product_change_rate + merchant.stock_change_rate
    read = _distinct(merchant.products, rate, 24 * SWEEP_DAYS) if pulled else 0
    if whole and read >= (share - whole) * max(1, runs) * SWEEP_DAYS:
        return whole
    return share


# How crontab.example runs synccli (the full path cron finds it at, README "Production"), so a
# proposed line can be pasted next to its lines.
CRON_COMMAND = "/usr/local/bin/synccli -q --log-format json --log-file /var/log/synccli/synccli.log"


def propose(provider: str, merchant: Merchant) -> list[str]:
    """A schedule that fits the provider's limits, as crontab lines."""
    m = model(provider)
    for pull_every in (30, 60, 120):
        schedule = [
            Entry(Job.PULL_PRODUCTS, 1440 // pull_every, pull_every),
            Entry(Job.SWEEP_OLDEST, 1, 1440, "auto"),
            Entry(Job.LINK_CUSTOMERS, 1, 1440),
            Entry(Job.POST_INVOICES, 12, 120),
        ]
        report = _cost(provider, merchant, schedule)
        within_day = not m.per_day or report.calls_per_day <= m.per_day
        within_month = not m.per_month or report.calls_per_month <= m.per_month
        if within_day and within_month:
            pull = f"*/{pull_every} * * * *" if pull_every < 60 else f"0 */{pull_every // 60} * * *"
            return [
                f"# about {report.calls_per_month:.0f} calls a month, product changes visible "
                f"within {pull_every} minutes",
                f"{pull}  {CRON_COMMAND} pull-products --all",
                f"30 2 * * *  {CRON_COMMAND} sweep-oldest auto --all",
                f"45 2 * * *  {CRON_COMMAND} link-customers --all",
                f"5 */2 * * *  {CRON_COMMAND} post-invoices --all",
            ]
    return ["# no schedule fits: ask the provider for a higher limit"]


# --- crontab.example's header ------------------------------------------------------------------
# The reference merchant whose figures crontab.example's header gives (and bench/month.py
# simulates by default).
REFERENCE = Merchant(products=5000, customers=3000, orders_per_day=50)


def limit_words(report: PlanReport) -> str:
    """A provider's long-window limit in words, as the header gives it."""
    if report.limit_day:
        return f"{report.limit_day:,} a day"
    if report.limit_month:
        return f"{report.limit_month:,} a month"
    return "no day or month cap (a short window only)"


def crontab_header(reports: list[PlanReport], merchant: Merchant = REFERENCE) -> list[str]:
    """The lines of crontab.example's header that state plan's figures (the command that
    prints them, and one row per provider), so a test can keep the file in step with plan."""
    command = (
        f"synccli plan --products {merchant.products} --customers {merchant.customers} "
        f"--orders-per-day {merchant.orders_per_day} "
        f"--change-rate {merchant.product_change_rate:g} "
        f"--stock-change-rate {merchant.stock_change_rate:g} "
        f"--payment-share {merchant.payment_share:g} --refund-share {merchant.refund_share:g} "
        "--crontab crontab.example"
    )
    width = max(len("provider"), *(len(r.provider) for r in reports))
    rows = [
        f"#   {'provider'.ljust(width)}  calls/day  calls/month  limit",
        *(
            f"#   {r.provider.ljust(width)}  {r.calls_per_day:>9,.1f}  {r.calls_per_month:>11,.0f}"
            f"  {limit_words(r)}"
            for r in reports
        ),
    ]
    return [f"# `{command}`", *rows]
