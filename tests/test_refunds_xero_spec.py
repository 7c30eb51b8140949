"""Xero refunds on the wire (issue 22, lines 4 and 6): the credit note, its look-up and its
allocation are sent as Xero's OpenAPI spec says, the simulator answers as the spec says, and
the simulator refuses an allocation over the invoice's amount due or the credit note's
remaining credit in Xero's own words (xeroizer#320, xero-php#251).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from xero_helpers import draft, make_connector, running

from synccli.connectors.base import RefundTarget
from synccli.errors import Rejected
from synccli.sandbox.xero import XeroSandbox

SPEC = Path(__file__).resolve().parent / "specs" / "xero_accounting.yaml"


@pytest.fixture(scope="module")
def spec() -> Any:
    from openapi_core import Config, OpenAPI

    return OpenAPI.from_file_path(str(SPEC), config=Config(spec_validator_cls=None))


class SpecRequest:
    def __init__(self, prepared: requests.PreparedRequest) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        split = urlsplit(str(prepared.url))
        self.host_url = "https://api.xero.com"
        self.path = split.path
        self.method = str(prepared.method).lower()
        body = prepared.body
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = prepared.headers.get("Content-Type", "application/json")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(split.query, keep_blank_values=True)),
            header=Headers(dict(prepared.headers)),
            cookie=ImmutableMultiDict(),
        )


class SpecResponse:
    def __init__(self, resp: requests.Response) -> None:
        from werkzeug.datastructures import Headers

        self.data = resp.content
        self.status_code = resp.status_code
        self.content_type = resp.headers.get("Content-Type", "application/json").split(";")[0]
        self.headers = Headers(dict(resp.headers))


def test_a_refund_is_sent_and_answered_as_the_spec_says(spec: Any) -> None:
    app = XeroSandbox(products=4, customers=2)
    with running(app) as server:
        conn, _, _ = make_connector(app, server.url)
        contact = next(iter(app.world().customers.values())).id
        invoice = draft(app, "INV-7", customer_id=contact)
        posted = conn.post_invoice(invoice, "inv-7")
        seen: list[requests.Response] = []
        conn.http.session.hooks["response"].append(lambda r, *a, **k: seen.append(r))
        target = RefundTarget("INV-7", posted.remote_id, invoice.date)
        refund = replace(invoice, number="INV-7-R1", refund_of=target, lines=invoice.lines[:1])
        note = conn.post_refund(refund, "inv-7-r1")
        again = conn.find_refund("INV-7-R1", target)
        assert again is not None and again.remote_id == note.remote_id
        assert conn.find_refund("INV-7-R9", target) is None
        calls = [
            (r.request.method, urlsplit(str(r.request.url)).path.split("2.0/")[1]) for r in seen
        ]
        assert calls == [
            ("PUT", "CreditNotes"),
            ("GET", f"Invoices/{posted.remote_id}"),
            ("PUT", f"CreditNotes/{note.remote_id}/Allocations"),
            ("GET", "CreditNotes"),  # found allocated: nothing more
            ("GET", "CreditNotes"),
        ]
        [stored] = app.extra[app.tenant].credit_notes.values()
        assert stored["RemainingCredit"] == 0 and stored["Total"] == float(note.total or 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openapi-core: "Unsupported scheme type" (oauth2)
            for resp in seen:
                if "/Invoices/" in str(resp.request.url):
                    continue  # getInvoice is checked by the invoice tests
                spec.validate_request(SpecRequest(resp.request))
                spec.validate_response(SpecRequest(resp.request), SpecResponse(resp))


def test_the_simulator_refuses_an_allocation_over_what_is_due_or_left() -> None:
    app = XeroSandbox(products=4, customers=2)
    with running(app) as server:
        conn, _, _ = make_connector(app, server.url)
        contact = next(iter(app.world().customers.values())).id
        invoice = draft(app, "INV-8", customer_id=contact)
        posted = conn.post_invoice(invoice, "inv-8")
        target = RefundTarget("INV-8", posted.remote_id, invoice.date)
        small = replace(invoice, number="CN-8", refund_of=target, lines=invoice.lines[:1])
        note = conn.create_credit_note(small, "cn-8")
        note_id = str(note["CreditNoteID"])
        left = Decimal(str(note["RemainingCredit"]))
        day = invoice.date.date()
        with pytest.raises(Rejected, match="greater than amount outstanding"):
            conn.allocate(note_id, posted.remote_id, left + Decimal("0.01"), day)
        inv = app.world().invoices[posted.remote_id]
        inv.body["AmountDue"] = 0
        with pytest.raises(Rejected, match="has already been paid off"):
            conn.allocate(note_id, posted.remote_id, left, day)
        inv.body["AmountDue"] = float(posted.total or 0)
        conn.allocate(note_id, posted.remote_id, left - Decimal("0.01"), day)
        with pytest.raises(Rejected, match="greater than amount outstanding"):
            conn.allocate(note_id, posted.remote_id, Decimal("0.02"), day)  # 0.01 left


def test_a_paid_invoice_s_refund_is_paid_back_as_the_spec_says(spec: Any) -> None:
    """The invoice is paid: the credit goes back out as a payment on the credit note (spec
    ``Payment.CreditNote``) into the payment account; request and answer per the spec."""
    app = XeroSandbox(products=4, customers=2)
    with running(app) as server:
        conn, _, _ = make_connector(app, server.url)
        conn.settings["payment_account_code"] = "090"
        contact = next(iter(app.world().customers.values())).id
        invoice = draft(app, "INV-9", customer_id=contact)
        posted = conn.post_invoice(invoice, "inv-9")
        inv = app.world().invoices[posted.remote_id]
        inv.body["AmountDue"], inv.body["Status"] = 0, "PAID"
        seen: list[requests.Response] = []
        conn.http.session.hooks["response"].append(lambda r, *a, **k: seen.append(r))
        target = RefundTarget("INV-9", posted.remote_id, invoice.date)
        refund = replace(invoice, number="INV-9-R1", refund_of=target, lines=invoice.lines[:1])
        note = conn.post_refund(refund, "inv-9-r1")
        assert (note.note or "").startswith(f"paid back: {note.total:.2f} out of account 090")
        paths = [urlsplit(str(r.request.url)).path.split("2.0/")[1] for r in seen]
        assert paths == ["CreditNotes", f"Invoices/{posted.remote_id}", "Payments"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for resp in seen[2:]:
                spec.validate_request(SpecRequest(resp.request))
                spec.validate_response(SpecRequest(resp.request), SpecResponse(resp))
