"""Reliability: a provider's answer is believed only when it says success (issue 16, lines 1-4
and the Xero part of 15).

- Line 1: an element of a Xero batch answer (Items, Contacts, Invoices) is refused when any one of
  a non-empty ``ValidationErrors``, ``HasValidationErrors: true``, ``HasErrors: true`` or
  ``StatusAttributeString: "ERROR"`` is present: one test per flag, alone, per element type
  (test_xero_element_refused_by_one_flag_alone, test_xero_batch_element_refused_by_one_flag).
- Line 2: no link to the nil GUID nor to a record with another code than the one asked for; such
  an invoice is rejected, never posted (test_xero_*_nil_guid_*, test_xero_item_*_code_*,
  test_unleashed_*, test_lightspeed_*).
- Line 3: a 400 ValidationException keeps every ``Elements[].ValidationErrors[].Message`` as its
  own message (attempt rows, email, ``invoices show``); the contact name-clash retry decides on
  the structured messages (test_xero_every_validation_message_is_kept_whole,
  test_xero_name_clash_with_another_refusal_is_not_retried_blindly).
- Line 4: a batch answered 400 resolves to one outcome per invoice and the run goes on
  (test_xero_batch_answered_400_*).
- Line 15: the Xero simulator answers refusals per element type as Xero does, by default
  (test_simulator_refusals_have_xeros_shape_per_element_type).

The Xero answers are made by the project's simulator; where a test needs an answer the simulator
would not give (one flag alone), :class:`_Answering` answers chosen elements itself without
processing them (Xero refused them: nothing was created), in Xero's wire shape.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
import requests
from hostile.support import serve
from sqlalchemy import select
from xero_helpers import draft, make_connector
from xero_spec_answers import (
    CREATE_CONTACTS_400,
    CREATE_INVOICES_200,
    CREATE_ITEMS_200,
    NIL_GUID,
    example,
)

from synccli import registry
from synccli.connectors.base import NewCustomer, NewProduct
from synccli.errors import Rejected
from synccli.sandbox import harness
from synccli.sandbox.core import Response
from synccli.sandbox.lightspeed import LightspeedSandbox
from synccli.sandbox.unleashed import UnleashedSandbox
from synccli.sandbox.xero import API, XeroSandbox
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Connection, InvoiceJob, Link, Notification, Order, Product
from synccli.sync import invoices
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders, line_amounts

pytestmark = pytest.mark.reliability

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox
ID_FIELD = {"Items": "ItemID", "Contacts": "ContactID", "Invoices": "InvoiceID"}
# each refusal flag alone, as Xero writes it (provider notes §2 summarizeErrors; OAS examples)
FLAGS: dict[str, dict[str, Any]] = {
    "ValidationErrors": {"ValidationErrors": [{"Message": "Xero says no (ValidationErrors)"}]},
    "HasValidationErrors": {"HasValidationErrors": True},
    "HasErrors": {"HasErrors": True},
    "StatusAttributeString": {"StatusAttributeString": "ERROR"},
}


# --- a Xero simulator that can answer chosen elements itself --------------------------------------
class _Answering(XeroSandbox):
    """``craft[plural](sent_element)`` returns the element to answer for it (the simulator never
    processes it: Xero refused it), or None to let the simulator process it as usual.

    ``summarise``: answer as Xero does without ``summarizeErrors=false`` (what it does in
    practice when the parameter is not honoured, provider notes §2, Xero-Net#285): a 400
    ValidationException listing only the refused elements, the valid siblings created.
    ``batch_error``: a 400 body answered for the whole call, nothing processed.
    ``reverse``: the elements answered in the reverse order (nothing in the spec promises the
    order; each element echoes its InvoiceNumber)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.craft: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}
        self.summarise = False
        self.batch_error: dict[str, Any] | None = None
        self.reverse = False  # answer the elements in the reverse order

    def _write_now(self, req, plural, one, tid, world, extra, ident):  # type: ignore[no-untyped-def]
        if self.batch_error is not None:
            return Response(400, self.batch_error)
        if self.summarise:  # the parameter is not honoured
            query = "&".join(
                p for p in req.query_string.split("&") if not p.startswith("summarizeErrors")
            )
            req = dataclasses.replace(req, query_string=query)
        craft = self.craft.get(plural)
        if craft is None:
            return super()._write_now(req, plural, one, tid, world, extra, ident)
        answered, bad = [], []
        for el in json.loads(req.body)[plural]:
            answer = craft(el)
            if answer == {}:  # lost inside Xero: neither processed nor answered
                continue
            if answer is None:
                rec, errors = one(el, req, world, extra, ident)
                assert not errors, errors
                answer = {**rec, "StatusAttributeString": "OK"} if plural == "Invoices" else rec
            else:
                bad.append(answer)
            answered.append(answer)
        if bad and self.summarise:
            return Response(400, validation_exception(bad))
        if self.reverse:
            answered.reverse()
        return Response(200, {**self._head(), plural: answered})


def validation_exception(elements: list[dict[str, Any]]) -> dict[str, Any]:
    """Xero's 400 body (OAS ``Error``; the createContacts 400 example)."""
    return {
        "ErrorNumber": 10,
        "Type": "ValidationException",
        "Message": "A validation exception occurred",
        "Elements": elements,
    }


def refused(sent: dict[str, Any], plural: str, flag: str, **more: Any) -> dict[str, Any]:
    """Xero's echo of ``sent`` with a real-looking id and ONE refusal flag."""
    return {**sent, ID_FIELD[plural]: str(uuid.uuid4()), **more, **FLAGS[flag]}


@contextmanager
def xero(**kw: Any) -> Iterator[harness.Running]:
    app = _Answering(time_scale=SCALE, products=12, customers=4, **kw)
    with serve("xero", app) as running:
        yield running


def connect(store: Store, running: harness.Running, **settings: Any) -> Connection:
    harness.add_connection(
        store,
        "shop",
        running,
        notify_email="owner@shop.example",
        time_scale=SCALE,
        **settings,
    )
    return get_connection(store, "shop")


def world(running: harness.Running) -> Any:
    return running.app.catalogue.tenant(running.app.tenant)


def known(running: harness.Running) -> tuple[Any, Any]:
    """A product and a customer the provider has."""
    w = world(running)
    product = sorted(w.products.values(), key=lambda p: p.code)[0]
    customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
    return product, customer


def order(
    number: str,
    lines: list[tuple[str, str, int, str]],
    customer: dict[str, str],
    provider: str = "xero",
    tax_code: str | None = None,
) -> dict[str, Any]:
    out, total = [], Decimal("0.00")
    for sku, description, qty, price in lines:
        amount, tax = line_amounts(Decimal(qty), Decimal(price), Decimal("0.15"))
        total += amount + tax
        out.append(
            {
                "sku": sku,
                "description": description,
                "quantity": qty,
                "unit_price": price,
                "tax_code": tax_code or TAX[provider],
                "tax_rate": "0.15",
            }
        )
    return {
        "number": number,
        "date": "2026-01-05",
        "currency": "NZD",
        "customer": customer,
        "lines": out,
        "total": str(total),
    }


def who(customer: Any) -> dict[str, str]:
    return {"email": customer.email, "name": customer.name}


def add(store: Store, conn: Connection, *orders: dict[str, Any]) -> None:
    assert add_orders(store, conn, "\n".join(json.dumps(o) for o in orders)).added == len(orders)


def run_post(store: Store, conn: Connection) -> invoices.PostReport:
    with job_run(store, invoices.JOB, conn) as ctx:
        report = invoices.post_invoices(ctx)
        ctx.counts = report
    return report


def job(store: Store, number: str) -> InvoiceJob:
    with store.session() as s:
        found = s.scalar(select(InvoiceJob).join(Order).where(Order.number == number))
    assert found is not None
    return found


def links(store: Store, kind: str) -> dict[str, str]:
    """remote id -> origin of every link of ``kind``."""
    with store.session() as s:
        return {lk.remote_id: lk.origin for lk in s.scalars(select(Link).where(Link.kind == kind))}


def product_link(store: Store, sku: str) -> str | None:
    with store.session() as s:
        product = s.scalar(select(Product).where(Product.sku == sku))
        if product is None:
            return None
        link = s.scalar(select(Link).where(Link.kind == "product", Link.local_id == product.id))
        return None if link is None else link.remote_id


def emails_about(store: Store, number: str) -> list[Notification]:
    with store.session() as s:
        return [n for n in s.scalars(select(Notification)) if number in n.subject]


def assert_rejected_not_posted(store: Store, number: str, report: invoices.PostReport) -> None:
    """The merchant's view of a refusal: failed (retried on the schedule), no remote id, one
    email naming the order."""
    row = job(store, number)
    assert row.state == "failed", (row.state, row.last_error)
    assert row.remote_id is None
    assert report.posted == 0 or all(i.number != number for i in report.invoices if i.remote_id)
    assert [i.outcome for i in report.invoices if i.number == number] == ["rejected"]
    assert len(emails_about(store, number)) == 1


# --- line 1: one flag alone refuses the element ------------------------------------------------
@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("plural", ["Items", "Contacts", "Invoices"])
def test_xero_element_refused_by_one_flag_alone(store: Store, plural: str, flag: str) -> None:
    """Items (a product created at sale time), Contacts (a customer created at sale time) and
    Invoices: an element carrying just one refusal flag, with a real-looking id, is a refusal:
    nothing is linked, the invoice is rejected (email, retry), never posted."""
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        lines = [(product.code, product.name, 2, "10.00")]
        buyer = who(customer)
        if plural == "Items":
            lines.append(("NEW-SKU-1", "A product Xero lacks", 1, "19.99"))
        if plural == "Contacts":
            buyer = {"email": "new.buyer@shop.example", "name": "New Buyer"}
        new = order("F-1", lines, buyer)
        add(store, conn, new)
        running.app.craft[plural] = lambda sent: refused(
            sent, plural, flag, Total=float(new["total"])
        )

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "F-1", report)
        if plural == "Items":
            assert product_link(store, "NEW-SKU-1") is None
        if plural == "Contacts":
            assert links(store, "customer") == {}
        assert world(running).invoices == {} or plural == "Invoices"


@pytest.mark.parametrize("flag", FLAGS)
def test_xero_batch_element_refused_by_one_flag(store: Store, flag: str) -> None:
    """Several invoices in one PUT: the element carrying one refusal flag is rejected, its
    neighbours are posted."""
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        orders = [
            order(f"B-{i}", [(product.code, product.name, i, "10.00")], who(customer))
            for i in (1, 2, 3)
        ]
        add(store, conn, *orders)
        total = float(orders[1]["total"])
        running.app.craft["Invoices"] = lambda sent: (
            refused(sent, "Invoices", flag, Total=total) if sent["InvoiceNumber"] == "B-2" else None
        )

        report = run_post(store, conn)

        assert running.app.counters.total("PUT", "Invoices") == 1  # one batch
        assert_rejected_not_posted(store, "B-2", report)
        assert {job(store, n).state for n in ("B-1", "B-3")} == {"posted"}
        assert report.posted == 2 and report.rejected == 1


def test_xero_batch_answer_in_another_order_gives_each_invoice_its_own_id(store: Store) -> None:
    """Each invoice takes the element that echoes its InvoiceNumber, wherever it stands: a
    reordered answer never swaps remote ids (nor makes a refusal of an accepted invoice)."""
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        orders = [
            order(f"R-{i}", [(product.code, product.name, i, "10.00")], who(customer))
            for i in (1, 2, 3)
        ]
        add(store, conn, *orders)
        running.app.craft["Invoices"] = lambda sent: None  # processed as usual
        running.app.reverse = True

        report = run_post(store, conn)

        assert report.posted == 3
        at_xero = {inv.number: inv.id for inv in world(running).invoices.values()}
        for number, remote_id in at_xero.items():
            row = job(store, number)
            assert (row.state, row.remote_id) == ("posted", remote_id)


# --- line 2: never a link to the nil GUID nor to another code ----------------------------------
def test_xero_invoice_answered_with_the_nil_guid_is_rejected_not_posted(store: Store) -> None:
    """An answer that says OK but names the nil GUID created nothing we can point at."""
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        new = order("N-1", [(product.code, product.name, 1, "10.00")], who(customer))
        add(store, conn, new)
        running.app.craft["Invoices"] = lambda sent: {
            **sent,
            "InvoiceID": NIL_GUID,
            "HasErrors": False,
            "StatusAttributeString": "OK",
            "Total": float(new["total"]),
        }

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "N-1", report)
        assert "00000000-0000-0000-0000-000000000000" in (job(store, "N-1").last_error or "")


def test_xero_contact_answered_with_the_nil_guid_is_not_linked(store: Store) -> None:
    with xero() as running:
        conn = connect(store, running)
        product, _ = known(running)
        new = order(
            "N-2",
            [(product.code, product.name, 1, "10.00")],
            {"email": "nil.contact@shop.example", "name": "Nil Contact"},
        )
        add(store, conn, new)
        running.app.craft["Contacts"] = lambda sent: {
            **sent,
            "ContactID": NIL_GUID,
            "HasValidationErrors": False,
        }

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "N-2", report)
        assert links(store, "customer") == {}
        assert world(running).invoices == {}


@pytest.mark.parametrize("with_errors", [True, False], ids=["spec-example", "code-alone"])
def test_xero_item_answered_with_another_code_is_not_linked(
    store: Store, with_errors: bool
) -> None:
    """Xero's createItems example: asked ``abc``, answered ``abc65591`` (with ValidationErrors,
    or, stricter, without them): a refusal, not a link."""
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        new = order(
            "C-1",
            [(product.code, product.name, 1, "10.00"), ("abc", "Hello world", 1, "5.00")],
            who(customer),
        )
        add(store, conn, new)
        answer = example(CREATE_ITEMS_200)["Items"][0]
        if not with_errors:
            answer["ValidationErrors"] = []
        running.app.craft["Items"] = lambda sent: answer

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "C-1", report)
        assert product_link(store, "abc") is None
        assert "a4544d51-48f6-441f-a623-99ecbced6ab7" not in links(store, "product")
        assert world(running).invoices == {}


def test_xero_invoice_answered_with_another_number_is_rejected(store: Store) -> None:
    with xero() as running:
        conn = connect(store, running)
        product, customer = known(running)
        new = order("C-2", [(product.code, product.name, 1, "10.00")], who(customer))
        add(store, conn, new)
        running.app.craft["Invoices"] = lambda sent: {
            **sent,
            "InvoiceID": str(uuid.uuid4()),
            "InvoiceNumber": "C-265591",
            "HasErrors": False,
            "StatusAttributeString": "OK",
            "Total": float(new["total"]),
        }

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "C-2", report)


class _Rewriting:
    """Rewrites the answers of matching requests after the simulator made them."""

    rules: list[tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]]]]

    def handle(self, req: Any) -> Any:
        resp = super().handle(req)  # type: ignore[misc]
        for method, path, rewrite in self.rules:
            if resp is not None and req.method == method and re.search(path, req.path):
                body = rewrite(json.loads(resp.encode()))
                resp = Response(resp.status, body, dict(resp.headers), resp.content_type)
        return resp


@contextmanager
def rewriting(provider: str, base: type, scale: float) -> Iterator[harness.Running]:
    cls = type(f"Rewriting{base.__name__}", (_Rewriting, base), {})
    app = cls(time_scale=scale, products=12, customers=4)
    app.rules = []
    with serve(provider, app) as running:
        yield running


def test_unleashed_sales_order_answered_with_the_nil_guid_is_rejected(store: Store) -> None:
    with rewriting("unleashed", UnleashedSandbox, SCALE) as running:
        conn = connect(store, running)
        product, customer = known(running)
        add(
            store,
            conn,
            order("U-1", [(product.code, product.name, 1, "10.00")], who(customer), "unleashed"),
        )
        running.app.rules.append(
            ("POST", r"/SalesOrders/[0-9a-fA-F-]+$", lambda body: {**body, "Guid": NIL_GUID})
        )

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "U-1", report)


def test_unleashed_product_answered_with_another_code_is_not_linked(store: Store) -> None:
    with rewriting("unleashed", UnleashedSandbox, SCALE) as running:
        conn = connect(store, running)
        product, customer = known(running)
        lines = [(product.code, product.name, 1, "10.00"), ("abc", "Hello world", 1, "5.00")]
        add(store, conn, order("U-2", lines, who(customer), "unleashed"))
        running.app.rules.append(
            ("POST", r"/Products/[0-9a-fA-F-]+$", lambda body: {**body, "ProductCode": "abc65591"})
        )

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "U-2", report)
        assert product_link(store, "abc") is None


def test_unleashed_product_answered_with_another_guid_is_not_linked(store: Store) -> None:
    """Unleashed creates at the Guid we choose: an answer naming another record is a refusal."""
    other = str(uuid.uuid4())
    with rewriting("unleashed", UnleashedSandbox, SCALE) as running:
        conn = connect(store, running)
        product, customer = known(running)
        lines = [(product.code, product.name, 1, "10.00"), ("abd", "Hello world", 1, "5.00")]
        add(store, conn, order("U-3", lines, who(customer), "unleashed"))
        running.app.rules.append(
            ("POST", r"/Products/[0-9a-fA-F-]+$", lambda body: {**body, "Guid": other})
        )

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "U-3", report)
        assert product_link(store, "abd") is None
        assert other not in links(store, "product")


def test_lightspeed_item_answered_with_another_code_is_not_linked(store: Store) -> None:
    def other_sku(body: dict[str, Any]) -> dict[str, Any]:
        item = body["Item"][0] if isinstance(body["Item"], list) else body["Item"]
        item["customSku"] = "abc65591"
        return body

    with rewriting("lightspeed", LightspeedSandbox, 200.0) as running:
        conn = connect(store, running)
        product, customer = known(running)
        lines = [(product.code, product.name, 1, "10.00"), ("abc", "Hello world", 1, "5.00")]
        add(store, conn, order("L-1", lines, who(customer), "lightspeed"))
        running.app.rules.append(("POST", r"/Item\.json$", other_sku))

        report = run_post(store, conn)

        assert_rejected_not_posted(store, "L-1", report)
        assert product_link(store, "abc") is None


# --- line 15: the simulator's refusals, per element type, by default -----------------------------
def test_simulator_refusals_have_xeros_shape_per_element_type() -> None:
    """summarizeErrors=false: Items refused with ValidationErrors alone (createItems example),
    Contacts with HasValidationErrors (createContacts example), Invoices with HasErrors and
    StatusAttributeString ERROR. Summarised: a 400 ValidationException with Elements."""
    app = XeroSandbox(time_scale=SCALE, products=3, customers=2)
    with serve("xero", app) as running:
        creds = app.credentials()
        head = {
            "Authorization": f"Bearer {creds['access_token']}",
            "xero-tenant-id": creds["tenant_id"],
            "Accept": "application/json",
        }
        taken = next(iter(world(running).customers.values())).name
        bodies = {
            "Items": {"Items": [{"Code": "X-1", "Name": "x", "SalesDetails": {"TaxType": "NOPE"}}]},
            "Contacts": {"Contacts": [{"Name": taken}]},
            "Invoices": {
                "Invoices": [
                    {
                        "Type": "ACCREC",
                        "Contact": {"ContactID": next(iter(world(running).customers))},
                        "LineItems": [
                            {"Description": "x", "Quantity": 1, "UnitAmount": 1, "TaxType": "NOPE"}
                        ],
                    }
                ]
            },
        }
        for plural, body in bodies.items():
            resp = requests.put(
                f"{running.url}{API}/{plural}",
                params={"summarizeErrors": "false"},
                json=body,
                headers=head,
                timeout=10,
            )
            assert resp.status_code == 200
            el = resp.json()[plural][0]
            assert el["ValidationErrors"] and el["ValidationErrors"][0]["Message"]
            if plural == "Items":
                assert "StatusAttributeString" not in el and "HasErrors" not in el
                assert "HasValidationErrors" not in el
            elif plural == "Contacts":
                assert el["HasValidationErrors"] is True
                assert "StatusAttributeString" not in el and "HasErrors" not in el
            else:
                assert el["HasErrors"] is True and el["StatusAttributeString"] == "ERROR"
            summarised = requests.put(
                f"{running.url}{API}/{plural}", json=body, headers=head, timeout=10
            )
            assert summarised.status_code == 400
            error = summarised.json()
            assert error["ErrorNumber"] == 10 and error["Type"] == "ValidationException"
            assert error["Message"] and error["Elements"][0]["ValidationErrors"]


# --- line 3: every validation message kept whole, decisions on the structured messages ----------
def bogus_lines(product: Any, n: int) -> list[dict[str, Any]]:
    """n lines, each with its own tax code Xero does not know: n messages of ~90 characters."""
    return [
        {
            "sku": product.code,
            "description": f"{product.name} #{i}",
            "quantity": 1,
            "unit_price": "10.00",
            "tax_code": f"BOGUS{i}",
            "tax_rate": "0.15",
        }
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("summarise", [False, True], ids=["200-elements", "400-exception"])
def test_xero_every_validation_message_is_kept_whole(
    store: Store, cli: Any, summarise: bool
) -> None:
    """Eight messages (over 700 characters): each is its own message on the attempt row, in the
    merchant's email and in ``invoices show``, and ``last_error`` keeps them all."""
    with xero() as running:
        running.app.summarise = summarise
        conn = connect(store, running)
        product, customer = known(running)
        lines = bogus_lines(product, 8)
        new = {
            "number": "M-1",
            "date": "2026-01-05",
            "currency": "NZD",
            "customer": who(customer),
            "lines": lines,
            "total": str(Decimal("11.50") * 8),
        }
        add(store, conn, new)

        report = run_post(store, conn)

        expected = [
            f"The TaxType code BOGUS{i} does not exist or cannot be used for this type of "
            "transaction."
            for i in range(1, 9)
        ]
        assert_rejected_not_posted(store, "M-1", report)
        detail = invoices.show_invoice(store, "M-1")
        assert detail.history[0].messages == expected
        assert all(m in (detail.invoice.last_error or "") for m in expected)
        (email,) = emails_about(store, "M-1")
        assert all(f"  - {m}" in email.body for m in expected), email.body
        shown = json.loads(cli("invoices", "show", "M-1", "--json").stdout)
        assert shown["history"][0]["messages"] == expected
        text = cli("invoices", "show", "M-1").stdout
        assert all(f"BOGUS{i}" in text for i in range(1, 9)), text


NAME_CLASH = (
    "The contact name {name} is already assigned to another contact. The contact name must be "
    "unique across all active contacts."
)
ACCOUNT_TAKEN = "The Account Number already exists. Please enter a different Account Number."


@pytest.mark.parametrize("summarise", [False, True], ids=["200-elements", "400-exception"])
def test_xero_name_clash_with_another_refusal_is_not_retried_blindly(
    store: Store, summarise: bool
) -> None:
    """A renamed contact would still be refused for its account number: no second create, and
    the merchant hears both reasons."""
    with xero() as running:
        running.app.summarise = summarise
        conn = connect(store, running)
        product, _ = known(running)
        buyer = {"email": "clash@shop.example", "account_number": "ACC-9", "name": "Clash Buyer"}
        add(store, conn, order("K-1", [(product.code, product.name, 1, "10.00")], buyer))
        running.app.craft["Contacts"] = lambda sent: {
            **sent,
            "ContactID": NIL_GUID,
            "HasValidationErrors": True,
            "ValidationErrors": [
                {"Message": NAME_CLASH.format(name=sent["Name"])},
                {"Message": ACCOUNT_TAKEN},
            ],
        }

        report = run_post(store, conn)

        assert running.app.counters.total("PUT", "Contacts") == 1
        assert_rejected_not_posted(store, "K-1", report)
        (email,) = emails_about(store, "K-1")
        assert ACCOUNT_TAKEN in email.body and "Clash Buyer is already assigned" in email.body


def test_xero_name_clash_in_a_400_is_retried_with_a_distinct_name(store: Store) -> None:
    """The clash alone, answered as a 400 ValidationException (the createContacts example's
    shape): the contact is created under a distinct name and the invoice posted."""
    with xero() as running:
        running.app.summarise = True
        conn = connect(store, running)
        product, _ = known(running)
        buyer = {"email": "clash2@shop.example", "account_number": "ACC-10", "name": "Buzz"}
        add(store, conn, order("K-2", [(product.code, product.name, 1, "10.00")], buyer))
        calls = []

        def clash_once(sent: dict[str, Any]) -> dict[str, Any] | None:
            calls.append(sent["Name"])
            if len(calls) > 1:
                return None
            return {
                **sent,
                "ContactID": NIL_GUID,
                "HasValidationErrors": True,
                "ValidationErrors": [{"Message": NAME_CLASH.format(name=sent["Name"])}],
            }

        running.app.craft["Contacts"] = clash_once

        report = run_post(store, conn)

        assert report.posted == 1, report.invoices
        assert calls == ["Buzz", "Buzz (#ACC-10)"]
        assert job(store, "K-2").state == "posted"


# --- line 4: a batch answered 400 resolves to one outcome per invoice ---------------------------
def test_xero_batch_answered_400_posts_the_accepted_and_rejects_the_refused(store: Store) -> None:
    """Xero answers the batch 400 with the refused element only, having created its siblings
    (StackOverflow q52706101, Xero staff): those are found and posted with Xero's ids, the
    refused one is rejected with its message, and the next batch goes out."""
    with xero() as running:
        running.app.summarise = True
        conn = connect(store, running, invoice_batch="3")
        product, customer = known(running)
        orders = [
            order(
                f"Q-{i}",
                [(product.code, product.name, i, "10.00")],
                who(customer),
                tax_code="BOGUS" if i == 2 else None,
            )
            for i in range(1, 7)
        ]
        add(store, conn, *orders)

        report = run_post(store, conn)

        assert running.app.counters.total("PUT", "Invoices") == 2  # two batches of three
        assert "error" not in {i.outcome for i in report.invoices}
        assert report.posted == 5 and report.rejected == 1
        at_xero = {inv.number: inv.id for inv in world(running).invoices.values()}
        assert sorted(at_xero) == ["Q-1", "Q-3", "Q-4", "Q-5", "Q-6"]
        for number, remote_id in at_xero.items():
            row = job(store, number)
            assert (row.state, row.remote_id) == ("posted", remote_id)
        assert_rejected_not_posted(store, "Q-2", report)
        assert "BOGUS" in (job(store, "Q-2").last_error or "")


def test_xero_batch_answered_400_without_elements_rejects_each(store: Store) -> None:
    """A 400 for the whole call that names no element (nothing was processed): one rejection per
    invoice, each emailed, and the run ends normally."""
    with xero() as running:
        running.app.batch_error = {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "Idempotency-Key 'synccli-batch-x' is used with a different request",
        }
        conn = connect(store, running)
        product, customer = known(running)
        orders = [
            order(f"W-{i}", [(product.code, product.name, i, "10.00")], who(customer))
            for i in (1, 2)
        ]
        add(store, conn, *orders)

        report = run_post(store, conn)

        assert report.rejected == 2 and report.posted == 0
        for number in ("W-1", "W-2"):
            assert_rejected_not_posted(store, number, report)
            assert "used with a different request" in (job(store, number).last_error or "")


def test_xero_batch_answered_400_invoice_neither_refused_nor_found_is_looked_up_next_run(
    store: Store,
) -> None:
    """An invoice missing from both the 400's elements and Xero's records has no clear answer:
    it stays ``posting`` (no email), and the next run looks it up, then posts it once."""
    with xero() as running:
        running.app.summarise = True
        conn = connect(store, running)
        product, customer = known(running)
        orders = [
            order(f"G-{i}", [(product.code, product.name, i, "10.00")], who(customer))
            for i in (1, 2)
        ]
        add(store, conn, *orders)
        total = float(orders[1]["total"])
        running.app.craft["Invoices"] = lambda sent: (
            {}
            if sent["InvoiceNumber"] == "G-1"
            else refused(sent, "Invoices", "HasErrors", Total=total)
        )

        report = run_post(store, conn)

        assert [i.outcome for i in report.invoices if i.number == "G-1"] == ["transient"]
        assert job(store, "G-1").state == "posting"
        assert emails_about(store, "G-1") == []
        assert_rejected_not_posted(store, "G-2", report)

        running.app.craft.clear()
        running.app.summarise = False
        again = run_post(store, conn)

        assert job(store, "G-1").state == "posted"
        assert [i.number for i in world(running).invoices.values()] == ["G-1"]
        assert again.posted == 1


# --- Xero's published examples, answered to the connector itself ------------------------------
def test_connector_reads_the_create_items_example_as_a_refusal() -> None:
    """createItems 200 example: ValidationErrors and no status at all -> Rejected with Xero's
    message, never a product."""
    app = _Answering(time_scale=SCALE, products=3, customers=2)
    app.craft["Items"] = lambda sent: example(CREATE_ITEMS_200)["Items"][0]
    with serve("xero", app) as running:
        connector, _, _ = make_connector(app, running.url)
        with pytest.raises(Rejected) as refusal:
            connector.create_product(NewProduct(code="abc", name="Hello", price=Decimal("1")))
    assert refusal.value.errors == ["Price List Item with Code ''abc'' already exists"]


def test_connector_reads_the_create_contacts_400_example_message_by_message() -> None:
    """createContacts 400 example (HasValidationErrors, nil ContactID): the clash message whole;
    a clash alone is worth one retry under a distinct name, refused again here -> Rejected."""
    app = _Answering(time_scale=SCALE, products=3, customers=2)
    app.summarise = True
    app.craft["Contacts"] = lambda sent: example(CREATE_CONTACTS_400)["Elements"][0]
    with serve("xero", app) as running:
        connector, _, _ = make_connector(app, running.url)
        with pytest.raises(Rejected) as refusal:
            connector.create_customer(
                NewCustomer(name="Buzz Lightyear", account_number="12345-ABCD")
            )
    message = CREATE_CONTACTS_400["Elements"][0]["ValidationErrors"][0]["Message"]
    assert refusal.value.errors == [message] and refusal.value.status == 400
    assert app.counters.total("PUT", "Contacts") == 2
    sent = [r for r in app.counters.requests if r["kind"] == "customer"]
    assert sent == []  # nothing was created


@pytest.mark.parametrize("flip", [None, *FLAGS])
def test_connector_reads_the_create_invoices_example(flip: str | None) -> None:
    """createInvoices 200 example: accepted (HasErrors false, StatusAttributeString OK) ->
    posted with Xero's InvoiceID; the same element with any one refusal flag -> Rejected."""
    app = _Answering(time_scale=SCALE, products=3, customers=2)

    def answer(sent: dict[str, Any]) -> dict[str, Any]:
        el = example(CREATE_INVOICES_200)["Invoices"][0]
        return {**el, **FLAGS[flip]} if flip else el

    app.craft["Invoices"] = answer
    with serve("xero", app) as running:
        connector, _, _ = make_connector(app, running.url)
        invoice = draft(app, "INV-0007")
        if flip is None:
            posted = connector.post_invoice(invoice, "key-1")
            assert posted.remote_id == "ed255415-e141-4150-aab7-89c3bbbb851c"
            assert posted.total == Decimal("40.00")
        else:
            with pytest.raises(Rejected):
                connector.post_invoice(invoice, "key-1")
