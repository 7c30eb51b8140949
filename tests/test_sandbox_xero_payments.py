"""The Xero simulator's payments and accounts (PUT/GET /Payments, GET /Accounts), and the
connector's calls to them, against the official OpenAPI spec (tests/specs/, MIT): every request
the connector sends and every answer the simulator gives is validated by it. Refusals follow
what Xero answers (sources in synccli/sandbox/xero_payments.py)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from xero_helpers import Raw, draft, make_connector, running

from synccli.clock import SimClock
from synccli.connectors.base import AppliedPayment, PaymentToApply
from synccli.errors import Rejected
from synccli.sandbox.xero import XeroSandbox

SPEC = Path(__file__).resolve().parent / "specs" / "xero_accounting.yaml"
START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOT_PAYABLE = "Account type is invalid for making a payment to/from"


@pytest.fixture(scope="module")
def spec() -> Any:
    from openapi_core import Config, OpenAPI

    return OpenAPI.from_file_path(str(SPEC), config=Config(spec_validator_cls=None))


class _Req:
    """A sent request through openapi-core's Request protocol, on Xero's host."""

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


class _Resp:
    def __init__(self, resp: requests.Response) -> None:
        from werkzeug.datastructures import Headers

        self.data = resp.content
        self.status_code = resp.status_code
        self.content_type = resp.headers.get("Content-Type", "").split(";")[0]
        self.headers = Headers(dict(resp.headers))


def _validated(spec: Any, seen: list[requests.Response]) -> set[tuple[str, str, int]]:
    """Validate each exchange against the spec; returns (method, path end, status) seen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openapi-core: "Unsupported scheme type" (oauth2)
        for resp in seen:
            spec.validate_request(_Req(resp.request))
            spec.validate_response(_Req(resp.request), _Resp(resp))
    return {
        (str(r.request.method), urlsplit(str(r.url)).path.rsplit("/", 1)[-1], r.status_code)
        for r in seen
    }


def _pay(inv_id: str, amount: str, ref: str, code: str = "090") -> PaymentToApply:
    return PaymentToApply(inv_id, Decimal(amount), datetime(2026, 3, 2, tzinfo=UTC), ref, code)


def test_payments_and_their_look_up_validate_against_the_openapi_spec(spec: Any) -> None:
    app = XeroSandbox(products=4, customers=2, clock=SimClock(START))
    with running(app) as server:
        conn, _, _ = make_connector(app, server.url)
        seen: list[requests.Response] = []
        conn.http.session.hooks["response"].append(lambda r, *a, **k: seen.append(r))
        one = conn.post_invoice(draft(app, "PAY-1"), "pay-1")
        two = conn.post_invoice(draft(app, "PAY-2"), "pay-2")
        total = Decimal(str(one.total))
        results = conn.apply_payments(
            [
                _pay(one.remote_id, "10.00", "PAY-1 payment 1"),
                _pay(one.remote_id, str(total - Decimal("10.00")), "PAY-1 payment 2 ch_9"),
                _pay(two.remote_id, "1.00", "PAY-2 payment 1", code="200"),  # a revenue account
            ]
        )
        found = conn.find_payments([one.remote_id, two.remote_id])
        assert conn.payment_account_problem("090") is None
        assert "neither a bank account nor enabled" in str(conn.payment_account_problem("200"))
        assert "no account" in str(conn.payment_account_problem("999"))
    assert _validated(spec, seen) == {
        ("PUT", "Invoices", 200),
        ("PUT", "Payments", 200),
        ("GET", "Payments", 200),
        ("GET", "Accounts", 200),
    }
    first, second, refused = results
    assert isinstance(first, AppliedPayment) and isinstance(second, AppliedPayment)
    assert isinstance(refused, Rejected) and refused.errors == [NOT_PAYABLE]
    assert sorted((p.reference, p.amount) for p in found) == [
        ("PAY-1 payment 1", Decimal("10.00")),
        ("PAY-1 payment 2 ch_9", total - Decimal("10.00")),
    ]
    paid = app.world().invoices[one.remote_id].body
    assert (paid["Status"], paid["AmountDue"], len(paid["Payments"])) == ("PAID", 0, 2)
    unpaid = app.world().invoices[two.remote_id].body
    assert (unpaid["Status"], unpaid["AmountPaid"], unpaid["Payments"]) == ("AUTHORISED", 0, [])
    # one PUT carried all three payments
    assert app.counters.total("PUT", "Payments") == 1


def _invoice(raw: Raw, number: str, status: str = "AUTHORISED") -> dict[str, Any]:
    world = raw.app.world()
    body = {
        "Invoices": [
            {
                "Type": "ACCREC",
                "Contact": {"ContactID": next(iter(world.customers))},
                "InvoiceNumber": number,
                "Status": status,
                "LineItems": [
                    {
                        "Description": "Mug",
                        "Quantity": 1,
                        "UnitAmount": 20,
                        "AccountCode": "200",
                        "TaxType": "NONE",
                    }
                ],
            }
        ]
    }
    resp = raw.put("Invoices", body, {"summarizeErrors": "false"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["Invoices"][0])


def _element(inv_id: str, **over: Any) -> dict[str, Any]:
    el: dict[str, Any] = {
        "Invoice": {"InvoiceID": inv_id},
        "Account": {"Code": "090"},
        "Date": "2026-03-02",
        "Amount": 5,
        "Reference": "r",
    }
    el.update(over)
    return {k: v for k, v in el.items() if v is not None}


def test_refusals_are_xeros_and_a_refused_element_still_carries_a_payment_id() -> None:
    app = XeroSandbox(products=2, customers=2)
    app.world()  # seeded
    with running(app) as server:
        raw = Raw(app, server)
        inv = _invoice(raw, "R-1")["InvoiceID"]
        draft_inv = _invoice(raw, "R-2", status="DRAFT")["InvoiceID"]
        cases = {
            "over": _element(inv, Amount=20.01),
            "draft": _element(draft_inv),
            "revenue": _element(inv, Account={"Code": "200"}),
            "no account": _element(inv, Account=None),
            "date": _element(inv, Date="02/03/2026"),
            "ok": _element(inv, Amount=20),
            "paid already": _element(inv, Amount=1),  # after "ok": the invoice is PAID
        }
        resp = raw.put("Payments", {"Payments": list(cases.values())}, {"summarizeErrors": "false"})
        assert resp.status_code == 200, resp.text
        answers = dict(zip(cases, resp.json()["Payments"], strict=True))
        # the summarised form: a 400 naming the bad element; its valid sibling is applied
        other = _invoice(raw, "R-3")["InvoiceID"]
        summarised = raw.put(
            "Payments", {"Payments": [_element(other, Amount=99), _element(other, Amount=3)]}
        )
    messages = {
        k: [m["Message"] for m in v.get("ValidationErrors", [])] for k, v in answers.items()
    }
    assert messages == {
        "over": ["Payment amount exceeds the amount outstanding on this document"],
        "draft": ["Payments can only be made against Authorised documents"],
        "revenue": [NOT_PAYABLE],
        "no account": ["You must specify an Account code or Account ID for the payment"],
        "date": ["'02/03/2026' is not a valid date"],
        "ok": [],
        "paid already": ["Payments can only be made against Authorised documents"],
    }
    over = answers["over"]  # as the spec's createPayments example answers a refusal
    assert over["HasValidationErrors"] is True and over["Status"] == "AUTHORISED"
    assert over["PaymentID"] and answers["ok"]["HasValidationErrors"] is False
    assert summarised.status_code == 400
    assert summarised.json()["Type"] == "ValidationException"
    assert [e["Amount"] for e in summarised.json()["Elements"]] == [99]
    world = app.world()
    assert world.invoices[other].body["AmountPaid"] == 3
    assert sum(len(i.body.get("Payments", [])) for i in world.invoices.values()) == 2


def test_payments_are_found_by_invoice_and_the_idempotency_key_replays() -> None:
    app = XeroSandbox(products=2, customers=2)
    with running(app) as server:
        raw = Raw(app, server)
        a = _invoice(raw, "F-1")["InvoiceID"]
        b = _invoice(raw, "F-2")["InvoiceID"]
        body = {"Payments": [_element(a, Reference="a1"), _element(b, Reference="b1")]}
        for _ in range(2):  # the same key: the second is the first's answer, nothing applied
            resp = raw.put(
                "Payments", body, {"summarizeErrors": "false"}, **{"Idempotency-Key": "k1"}
            )
            assert resp.status_code == 200
        where = f'Invoice.InvoiceID==Guid("{a}")'
        listed = raw.get("Payments", {"where": where, "page": 1}).json()
        everything = raw.get("Payments").json()
        accounts = raw.get("Accounts", {"where": 'Type=="BANK"'}).json()
    assert [p["Reference"] for p in listed["Payments"]] == ["a1"]
    assert listed["pagination"]["itemCount"] == 1
    assert sorted(p["Reference"] for p in everything["Payments"]) == ["a1", "b1"]
    assert [a["Code"] for a in accounts["Accounts"]] == ["090", "091"]
    assert json.dumps(listed).count("PaymentID") == 1
