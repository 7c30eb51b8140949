"""A look-up can never miss our own invoice (issue #16, lines 7, 8 and 15).

Every scenario goes through a lost answer: the provider commits a write (a sale, an item, a
customer) but its answer never arrives, so the next run has to find that record by the value we
sent (the order number, the SKU, the email). With a value that looks like the provider's own query
syntax (Lightspeed's ``~,`` / ``IN,[...]`` / ``><,`` operator prefixes, ``%`` and ``_``, Xero's
quotes and backslashes, ``+``, ``&``, non-ASCII) the look-up must still find exactly our record, so
nothing is written twice: one sale, one item, one customer at the provider.

A value a provider cannot compare exactly is refused by ``invoices add`` with a message naming the
field, before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from synccli import registry
from synccli.errors import TransientError
from synccli.sandbox import harness
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Connection, InvoiceJob
from synccli.sync import invoices
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders, line_amounts

pytestmark = [pytest.mark.reliability]

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox
WRITES = {  # (method, path regex) of each kind of write, for the lost-answer fault
    ("lightspeed", "invoice"): ("POST", r"/Sale\.json$"),
    ("lightspeed", "product"): ("POST", r"/Item\.json$"),
    ("lightspeed", "customer"): ("POST", r"/Customer\.json$"),
}


# --- helpers ------------------------------------------------------------------------------------
@contextmanager
def sandbox(provider: str, **kw: Any) -> Iterator[harness.Running]:
    kw.setdefault("time_scale", SCALE)
    kw.setdefault("products", 12)
    kw.setdefault("customers", 6)
    running = harness.start(provider, **kw)
    try:
        yield running
    finally:
        running.stop()


def connect(store: Store, running: harness.Running) -> Connection:
    harness.add_connection(
        store, "shop", running, notify_email="owner@shop.example", time_scale=SCALE
    )
    return get_connection(store, "shop")


def world(running: harness.Running) -> Any:
    return running.app.catalogue.tenant(running.app.tenant)


def order(
    running: harness.Running,
    number: str,
    *,
    sku: str | None = None,
    email: str | None = None,
    account: str | None = None,
) -> str:
    """One order line of one unit: a product the sandbox has unless ``sku`` names another; the
    sandbox's first customer unless ``email`` / ``account`` name another."""
    w = world(running)
    known = sorted(w.products.values(), key=lambda p: p.code)[0]
    first = sorted(w.customers.values(), key=lambda c: c.code)[0]
    if email is None and account is None:
        customer = {"email": first.email, "account_number": first.account_number}
        customer["name"] = first.name
    else:
        customer = {"name": "Hostile Value"}
        if email is not None:
            customer["email"] = email
        if account is not None:
            customer["account_number"] = account
    price = "12.30"
    amount, tax = line_amounts(Decimal(1), Decimal(price), Decimal("0.15"))
    line = {
        "sku": sku or known.code,
        "description": f"Item {sku or known.code}",
        "quantity": 1,
        "unit_price": price,
        "tax_code": TAX[running.provider],
        "tax_rate": "0.15",
    }
    body = {
        "number": number,
        "date": "2026-01-05",
        "currency": "NZD",
        "customer": customer,
        "lines": [line],
        "total": str(amount + tax),
    }
    return json.dumps(body) + "\n"


def run_post(store: Store, conn: Connection) -> invoices.PostReport:
    with job_run(store, invoices.JOB, conn) as ctx:
        report = invoices.post_invoices(ctx, None)
        ctx.counts = report
    return report


def post_through_a_lost_answer(store: Store, conn: Connection, running: harness.Running) -> None:
    """Runs until the job is settled (at most five): the first loses the armed write's answer."""
    for _ in range(5):
        try:
            run_post(store, conn)
        except TransientError:
            pass
        if not {"pending", "posting"} & states(store):
            break
    assert running.app.faults.fired["lost"] == 1


def states(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(InvoiceJob.state)))


def lose(running: harness.Running, what: str) -> None:
    method, path = WRITES[(running.provider, what)]
    running.app.faults.add("lost", method=method, path=path, times=1)


def other_orders(running: harness.Running, store: Store, conn: Connection) -> None:
    """A few ordinary sales first: a look-up read as LIKE, IN or a range has rows to mismatch."""
    batch = "".join(order(running, f"WEB-{i}") for i in range(1, 4))
    add_orders(store, conn, batch)
    run_post(store, conn)
    assert states(store) == {"posted"}


# --- Lightspeed (line 7, line 15) ---------------------------------------------------------------
LIGHTSPEED_HOSTILE = [
    "~,WEB%",  # LIKE with a wildcard
    "!~,WEB-1",  # NOT LIKE
    ">,WEB-1",  # greater than
    "IN,[WEB-1]",  # an IN list
    "><,A,Z",  # BETWEEN
    "=,WEB-1",  # the explicit operator itself
    "WEB_%",  # LIKE wildcards without an operator
    "O'B\"r\\i+e&n ü",  # quotes, a backslash, +, &, a space and non-ASCII
]


def lightspeed_sales(running: harness.Running, number: str) -> list[Any]:
    return [inv for inv in world(running).invoices.values() if inv.number == number]


@pytest.mark.parametrize("number", LIGHTSPEED_HOSTILE)
def test_lightspeed_sale_found_by_a_hostile_reference_after_a_lost_answer(
    store: Store, number: str
) -> None:
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, number))
        lose(running, "invoice")
        post_through_a_lost_answer(store, conn, running)
        assert len(lightspeed_sales(running, number)) == 1, "the sale was posted twice"
        assert states(store) == {"posted"}
        assert len(world(running).invoices) == 4


@pytest.mark.parametrize("sku", ["~,NEW%", "IN,[NEW-1]", "><,A,Z", ">,A", "NEW_%", "N'E\"W\\+&ü"])
def test_lightspeed_item_found_by_a_hostile_sku_after_a_lost_answer(store: Store, sku: str) -> None:
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, "NEW-ITEM-1", sku=sku))
        lose(running, "product")
        post_through_a_lost_answer(store, conn, running)
        items = [p for p in world(running).products.values() if p.code == sku]
        assert len(items) == 1, f"{len(items)} items with SKU {sku!r}"
        assert len(lightspeed_sales(running, "NEW-ITEM-1")) == 1
        assert states(store) == {"posted"}


@pytest.mark.parametrize(
    "email", ["o\\brien@buyer.example", "~,ann@buyer.example", "a%b_c@buyer.example"]
)
def test_lightspeed_customer_found_by_a_hostile_email_after_a_lost_answer(
    store: Store, email: str
) -> None:
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, "NEW-CUST-1", email=email))
        lose(running, "customer")
        post_through_a_lost_answer(store, conn, running)
        people = [c for c in world(running).customers.values() if c.email == email]
        assert len(people) == 1, f"{len(people)} customers with email {email!r}"
        assert len(lightspeed_sales(running, "NEW-CUST-1")) == 1
        assert states(store) == {"posted"}


def test_lightspeed_simulator_reads_operator_prefixes_as_lightspeed_documents(
    store: Store,
) -> None:
    """Line 15: a value sent without an explicit operator is read as one, as on the real API."""
    import requests

    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        app = running.app
        token = app.credentials()["access_token"]
        url = f"{running.url}/API/V3/Account/{app.tenant}/Sale.json"

        def numbers(value: str) -> list[str]:
            resp = requests.get(
                url,
                params={"referenceNumber": value},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert resp.status_code == 200, resp.text
            rows = resp.json().get("Sale", [])
            rows = [rows] if isinstance(rows, dict) else rows
            return sorted(r["referenceNumber"] for r in rows)

        assert numbers("WEB-1") == ["WEB-1"]
        assert numbers("=,WEB-1") == ["WEB-1"]  # the explicit equal
        assert numbers("~,WEB-%") == ["WEB-1", "WEB-2", "WEB-3"]
        assert numbers("~,web\\-1") == ["WEB-1"]  # MySQL's LIKE: a backslash escapes
        assert numbers("IN,[WEB-1,WEB-3]") == ["WEB-1", "WEB-3"]
        assert numbers("><,WEB-2,WEB-3") == ["WEB-2", "WEB-3"]
        assert numbers(">,WEB-2") == ["WEB-3"]
        assert numbers("!~,WEB-2") == ["WEB-1", "WEB-3"]
        assert numbers("=,~,WEB-%") == []  # after =, the rest is the value, verbatim


# --- Xero and Unleashed (line 8, line 15) -------------------------------------------------------
# The other providers retry a write under the same key or Guid, so a single lost answer is mended
# inside the call. The look-up matters when every try of the write went unanswered and the next
# run comes later than the provider's idempotency window (Xero replays a key for minutes only).
LATER = 3600.0

XERO_WRITES = {"invoice": ("PUT", r"/Invoices$"), "product": ("PUT", r"/Items$")}
XERO_WRITES["customer"] = ("PUT", r"/Contacts$")
UNLEASHED_WRITES = {"invoice": ("POST", r"/SalesOrders/[0-9a-fA-F-]+$")}
UNLEASHED_WRITES["product"] = ("POST", r"/Products/[0-9a-fA-F-]+$")
UNLEASHED_WRITES["customer"] = ("POST", r"/Customers/[0-9a-fA-F-]+$")
# X-Series: a sale goes under our own id, found again by GET /sales/{id}
X_SERIES_WRITES = {"invoice": ("POST", r"/sales$"), "product": ("POST", r"/products$")}
X_SERIES_WRITES["customer"] = ("POST", r"/customers$")
OTHER_WRITES = {"xero": XERO_WRITES, "unleashed": UNLEASHED_WRITES, "lightspeed-x": X_SERIES_WRITES}


def settle_after_unanswered_write(
    store: Store, conn: Connection, running: harness.Running, what: str
) -> None:
    """The first run's write (and its retries) commit nothing we hear of; the next runs come an
    hour later, when the provider no longer replays the write's key."""
    method, path = OTHER_WRITES[running.provider][what]
    running.app.faults.add("lost", method=method, path=path, times=1)
    running.app.faults.add("503", method=method, path=path, times=10)
    try:
        run_post(store, conn)
    except TransientError:
        pass
    assert running.app.faults.fired["lost"] == 1
    running.app.faults.clear()
    for _ in range(3):
        running.app.clock.advance(LATER)
        try:
            run_post(store, conn)
        except TransientError:
            pass
        if not {"pending", "posting"} & states(store):
            break


def remote_orders(running: harness.Running, number: str) -> list[Any]:
    return [inv for inv in world(running).invoices.values() if inv.number == number]


HOSTILE = {  # quotes, backslashes, +, &, %, non-ASCII, and a comma (Xero's InvoiceNumbers list)
    "comma": "WEB,1",
    "backslash": "WEB\\1",
    "apostrophe": "O'Brien-1",
    "plus-amp-pct": "A+B&C%D",
    "non-ascii": "Ünïcødé-№1",
}


# the providers that replay a write under its key (Lightspeed: none), and an Unleashed that
# checks the signature over the decoded query
VARIANTS = [p for p in registry.suite_names() if registry.get(p).capabilities.idempotency_keys]
VARIANTS.append("unleashed-decoded")
# a double quote: Xero cannot look it up at all, so for Xero it is refused by `invoices add`
# (test_invoices_add_refuses_a_value_xero_cannot_look_up_naming_the_field)
QUOTE = {"dquote": 'WEB-"1"'}
CUSTOMER_QUOTE = {"email-dquote": ('"o.b"@buyer.example', None), "account-dquote": (None, 'A"1')}


def cases(values: dict[str, Any], quoted: dict[str, Any]) -> list[tuple[str, str]]:
    """(variant, kind) pairs: every value for every variant, the quoted ones for Unleashed."""
    out = [(v, k) for v in VARIANTS for k in sorted(values)]
    return out + [(v, k) for v in VARIANTS if v != "xero" for k in sorted(quoted)]


@contextmanager
def later_sandbox(variant: str) -> Iterator[harness.Running]:
    """A sandbox on a clock the test moves. ``unleashed-decoded``: an Unleashed that checks the
    signature over the percent-decoded query (what one public client signs; which form the server
    canonicalises to is unconfirmed in the provider notes, so the look-ups must hold for both)."""
    from datetime import UTC, datetime

    from synccli.clock import SimClock

    provider, form = variant, ""  # a provider's own name may hold a dash (lightspeed-x)
    if variant not in registry.names():
        provider, _, form = variant.rpartition("-")
    kw: dict[str, Any] = {"signature_form": form} if form else {}
    clock = SimClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    with sandbox(provider, clock=clock, **kw) as running:
        yield running


@pytest.mark.parametrize(("provider", "kind"), cases(HOSTILE, QUOTE))
def test_invoice_found_by_a_hostile_number_after_unanswered_posts(
    store: Store, provider: str, kind: str
) -> None:
    number = {**HOSTILE, **QUOTE}[kind]
    with later_sandbox(provider) as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, number))
        settle_after_unanswered_write(store, conn, running, "invoice")
        assert len(remote_orders(running, number)) == 1, "posted twice (or not at all)"
        assert states(store) == {"posted"}
        assert len(world(running).invoices) == 4


@pytest.mark.parametrize(("provider", "kind"), cases(HOSTILE, QUOTE))
def test_product_found_by_a_hostile_sku_after_unanswered_creates(
    store: Store, provider: str, kind: str
) -> None:
    sku = "NEW-" + {**HOSTILE, **QUOTE}[kind]
    with later_sandbox(provider) as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, "NEW-ITEM-1", sku=sku))
        settle_after_unanswered_write(store, conn, running, "product")
        items = [p for p in world(running).products.values() if p.code == sku]
        assert len(items) == 1, f"{len(items)} products with code {sku!r}"
        assert len(remote_orders(running, "NEW-ITEM-1")) == 1
        assert states(store) == {"posted"}


CUSTOMERS = {  # (email, account number)
    "email-backslash": ("o\\brien@buyer.example", None),
    "email-plus-amp-pct": ("a+b&c%d@buyer.example", None),
    "email-non-ascii": ("zoë@bücher.example", None),
    "account-backslash": (None, "ACC\\1"),
    "account-plus-amp-pct": (None, "A+B&C%D"),
    "account-non-ascii": (None, "KUNDE-Ü1"),
}


@pytest.mark.parametrize(("provider", "kind"), cases(CUSTOMERS, CUSTOMER_QUOTE))
def test_customer_found_by_a_hostile_email_or_account_after_unanswered_creates(
    store: Store, provider: str, kind: str
) -> None:
    email, account = {**CUSTOMERS, **CUSTOMER_QUOTE}[kind]
    with later_sandbox(provider) as running:
        conn = connect(store, running)
        other_orders(running, store, conn)
        add_orders(store, conn, order(running, "NEW-CUST-1", email=email, account=account))
        settle_after_unanswered_write(store, conn, running, "customer")
        people = [
            c
            for c in world(running).customers.values()
            if (email and c.email == email) or (account and c.account_number == account)
        ]
        assert len(people) == 1, f"{len(people)} customers for {email or account!r}"
        assert len(remote_orders(running, "NEW-CUST-1")) == 1
        assert states(store) == {"posted"}


QUOTED = {  # field named in the refusal -> order keywords
    "number": {"number": 'WEB-"7"'},
    "lines[0].sku": {"sku": 'SKU-"7"'},
    "customer.email": {"email": '"o"@buyer.example'},
    "customer.account_number": {"account": 'ACC-"7"'},
}


@pytest.mark.parametrize("field", sorted(QUOTED))
def test_invoices_add_refuses_a_value_xero_cannot_look_up_naming_the_field(
    store: Store, cli: Any, tmp_path: Any, field: str
) -> None:
    """Xero's where filter has no escape for a double quote: such a value would never be found
    after a lost answer, so it is refused before anything is sent (exit 2, the field named)."""
    kw = dict(QUOTED[field])
    number = kw.pop("number", "WEB-7")
    with sandbox("xero") as running:
        connect(store, running)
        path = tmp_path / "orders.jsonl"
        path.write_text(order(running, number, **kw))
        result = cli("invoices", "add", str(path), "--connection", "shop")
        assert result.exit_code == 2, result.stdout + result.stderr
        assert field in result.stderr and "double quote" in result.stderr, result.stderr
        assert states(store) == set()
    with sandbox("lightspeed") as running:  # Lightspeed compares it exactly with =,
        harness.add_connection(store, "ls", running, time_scale=SCALE)
        assert cli("invoices", "add", str(path), "--connection", "ls").exit_code == 0


def test_an_order_stored_without_the_check_is_not_sent_to_xero(store: Store) -> None:
    """An order written straight into the tables with a quoted SKU: rejected as invalid before
    any call that could create a product or an invoice we could not find again."""
    from synccli.store.models import Order

    with sandbox("xero") as running:
        conn = connect(store, running)
        add_orders(store, conn, order(running, "WEB-8", sku="SKU-8"))
        with store.session() as s:
            stored = s.scalar(select(Order).where(Order.number == "WEB-8"))
            assert stored is not None
            stored.lines[0].sku = 'SKU-"8"'
        report = run_post(store, conn)
        assert report.posted == 0 and report.rejected == 1
        assert world(running).invoices == {} and running.app.counters.creates["product"] == 0
        with store.session() as s:
            job = s.scalar(select(InvoiceJob))
            assert job is not None and "double quote" in (job.last_error or "")


def test_xero_simulator_reads_where_strings_as_xero_does() -> None:
    """Line 15: in ``where`` a backslash is an ordinary character and a double quote cannot be
    escaped (XeroAPI/Xero-Java#347: both ``"a\\"b"`` and ``"a"b"`` answer QueryParseException)."""
    from xero_helpers import Raw, running

    from synccli.sandbox.xero import XeroSandbox

    app = XeroSandbox(products=2, customers=1)
    with running(app) as server:
        raw = Raw(app, server)
        for code in ("A\\B", "A\\\\B"):
            made = raw.put("Items", {"Items": [{"Code": code, "Name": code}]})
            assert made.status_code == 200, made.text

        def codes(where: str) -> Any:
            resp = raw.get("Items", {"where": where})
            if resp.status_code != 200:
                return resp.status_code, resp.json()["Type"]
            return sorted(i["Code"] for i in resp.json()["Items"])

        assert codes('Code=="A\\B"') == ["A\\B"]  # verbatim
        assert codes('Code=="A\\\\B"') == ["A\\\\B"]  # not an escaped backslash
        assert codes('Code=="A\\"B"') == (400, "QueryParseException")
        assert codes('Code=="A""B"') == (400, "QueryParseException")
        assert codes('Code=="A\'B"') == []  # an apostrophe is just a character


@pytest.mark.parametrize("form", ["raw", "decoded"])
def test_unleashed_wrong_key_still_fails_with_a_hostile_look_up(form: str) -> None:
    """The second signing of a refused look-up is no way around a wrong key: one more call, then
    the 403 as it was (the connection then needs its key fixed, as before)."""
    from synccli.connectors.unleashed import connect as unleashed
    from synccli.errors import AuthError

    with sandbox("unleashed", signature_form=form) as running:
        settings, creds = harness.connection_values(running)
        conn = unleashed(settings, {"api_key": "not-the-right-key-123"}, pace=False)
        calls = running.app.counters.total()
        with pytest.raises(AuthError, match="forbidden"):
            conn.find_product("A+B&C%D")
        assert running.app.counters.total() - calls == 2
        good = unleashed(settings, creds, pace=False)
        assert good.find_product("A+B&C%D") is None  # no such product, and no 403
