"""Xero payments: each payment of an order applied to its posted invoice, exactly once.

- ``apply_payments``: ``PUT /Payments?summarizeErrors=false`` with every payment of a batch in
  one ``Payments`` array (OAS ``createPayments``: "Creates multiple payments"), each with
  ``Invoice: {InvoiceID}``, ``Account: {Code}`` (the connection's ``payment_account_code``),
  ``Date`` (``YYYY-MM-DD``), ``Amount`` and a ``Reference`` unique to the order's payment. The
  call carries an ``Idempotency-Key`` derived from its body, so the HTTP layer's retry of a lost
  answer is replayed, not applied twice. Each element is read on its own: Xero answers 200 with
  a refusal inside (``HasValidationErrors`` / ``ValidationErrors``, even beside a PaymentID and
  ``Status: AUTHORISED``: the OAS createPayments example), which is ``Rejected``; an element
  that names no payment, or another invoice or amount than sent, is refused too.
- ``find_payments``: ``GET /Payments`` with ``where=Invoice.InvoiceID==Guid("…") OR …`` (OAS
  ``getPayments``: ``where``, paged), every page; deleted payments included (a payment the
  merchant removed was still ours: it is never sent again).
- ``payment_account_problem``: ``GET /Accounts?where=Code=="…"``: the account must exist, be
  ACTIVE and be a BANK account or have ``EnablePaymentsToAccount`` (see sandbox/xero_payments.py
  for the sources).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from synccli import secrets
from synccli.connectors.base import AppliedPayment, PaymentToApply
from synccli.connectors.http import parse_json
from synccli.connectors.wire import decimal_or_none
from synccli.errors import BadResponse, Rejected, TransientError
from synccli.remote_ids import is_nil

if TYPE_CHECKING:
    from synccli.connectors.xero import XeroConnector

API = "/api.xro/2.0"
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
PAYMENT_BATCH = 50  # elements per PUT, as for invoices (the notes: batches of about 50)
LOOKUP_BATCH = 20  # invoices per look-up: each adds about 60 characters to the URL
PAGE_SIZE = 1000


def payment_body(p: PaymentToApply) -> dict[str, Any]:
    return {
        "Invoice": {"InvoiceID": p.invoice_remote_id},
        "Account": {"Code": p.account_code},
        "Date": p.date.date().isoformat(),
        "Amount": float(p.amount),
        "Reference": p.reference,
    }


def applied_from(el: dict[str, Any]) -> AppliedPayment:
    raw = el.get("Invoice")
    invoice: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return AppliedPayment(
        remote_id=str(el.get("PaymentID") or ""),
        invoice_remote_id=str(invoice.get("InvoiceID") or "").lower(),
        amount=decimal_or_none(el.get("Amount")),
        reference=str(el.get("Reference") or ""),
        status=el.get("Status"),
    )


def _untrusted(sent: PaymentToApply, got: AppliedPayment) -> list[str]:
    """An accepted-looking element naming no payment, or another invoice or amount."""
    if is_nil(got.remote_id) or not got.remote_id:
        return [f"Xero answered payment {sent.reference!r} without a PaymentID"]
    if got.invoice_remote_id and got.invoice_remote_id != sent.invoice_remote_id.lower():
        return [
            f"Xero answered payment {sent.reference!r} against invoice {got.invoice_remote_id} "
            f"instead of {sent.invoice_remote_id}: taken as a refusal"
        ]
    if got.amount is not None and got.amount != sent.amount:
        return [
            f"Xero answered payment {sent.reference!r} with amount {got.amount} instead of "
            f"{sent.amount}: taken as a refusal"
        ]
    return []


def apply_payments(
    conn: XeroConnector, payments: list[PaymentToApply]
) -> list[AppliedPayment | Rejected | TransientError]:
    from synccli.connectors.xero import _key_for, refused

    if not payments:
        return []
    if len(payments) > PAYMENT_BATCH:
        raise ValueError(f"at most {PAYMENT_BATCH} payments per call")
    body = {"Payments": [payment_body(p) for p in payments]}
    resp = conn.http.request(
        "PUT",
        f"{API}/Payments",
        params={"summarizeErrors": "false"},
        json_body=body,
        headers={"Idempotency-Key": _key_for(body)},
        retry=True,  # the same body under the same key is replayed by Xero, never applied twice
        ok=(400,),
    )
    if resp.status_code == 400:
        return _refused_batch(payments, resp)
    answer = parse_json(resp)
    elements = answer.get("Payments") if isinstance(answer, dict) else None
    if not isinstance(elements, list) or len(elements) != len(payments):
        raise BadResponse(f"PUT /Payments: expected {len(payments)} elements in the response")
    results: list[AppliedPayment | Rejected | TransientError] = []
    for sent, el in zip(payments, elements, strict=True):
        got = applied_from(el) if isinstance(el, dict) else None
        messages = refused(el) or (_untrusted(sent, got) if got else ["unreadable element"])
        if messages:
            results.append(
                Rejected(
                    "PUT /Payments: " + "; ".join(messages),
                    errors=messages,
                    status=200,
                    body=secrets.redact(json.dumps(el)[:2000]),
                )
            )
        else:
            assert got is not None
            results.append(got)
    return results


def _refused_batch(
    payments: list[PaymentToApply], resp: Any
) -> list[AppliedPayment | Rejected | TransientError]:
    """A 400 ValidationException. One that names no element processed nothing: every payment is
    refused with its message. One that names elements refused those (each found by its echoed
    Reference) and may have applied the siblings it does not name (the notes §2): those are
    unclear, and looked up before they are sent again."""
    from synccli.connectors.xero import _error_body, _rejected_call, _validation_messages

    error = _error_body(resp)
    raw = error.get("Elements")
    elements = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    if not elements:
        err = _rejected_call("Payments", resp)
        return [err for _ in payments]
    body = secrets.redact(resp.text[:2000])
    named: dict[str, list[str]] = {}
    for el in elements:
        messages = _validation_messages([el]) or ["refused without a message"]
        named.setdefault(str(el.get("Reference") or ""), []).extend(messages)
    results: list[AppliedPayment | Rejected | TransientError] = []
    for p in payments:
        if p.reference in named:
            messages = named[p.reference]
            results.append(
                Rejected(
                    "PUT /Payments: " + "; ".join(messages),
                    errors=messages,
                    status=400,
                    body=body,
                )
            )
        else:
            results.append(
                TransientError(
                    f"PUT /Payments answered 400 without naming payment {p.reference!r}: it may "
                    "have been applied, and is looked up before it is sent again",
                    status=400,
                )
            )
    return results


def find_payments(conn: XeroConnector, invoice_ids: list[str]) -> list[AppliedPayment]:
    wanted = sorted({i.lower() for i in invoice_ids})
    for ident in wanted:
        if not GUID.match(ident):  # an id from Xero's own answers: anything else is not one
            raise BadResponse(f"invoice id {ident[:60]!r} is not a Xero id: cannot look it up")
    found: list[AppliedPayment] = []
    for start in range(0, len(wanted), LOOKUP_BATCH):
        chunk = wanted[start : start + LOOKUP_BATCH]
        where = " OR ".join(f'Invoice.InvoiceID==Guid("{i}")' for i in chunk)
        page, pages = 1, 1
        while page <= pages:
            params = {"where": where, "page": str(page), "pageSize": str(PAGE_SIZE)}
            body = conn.http.json("GET", f"{API}/Payments", params=params)
            rows = body.get("Payments") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise BadResponse("GET /Payments: no Payments list in the response")
            pagination = body.get("pagination") if isinstance(body, dict) else None
            count = pagination.get("pageCount") if isinstance(pagination, dict) else None
            # without the pagination block a page holds 100 (OAS getPayments ``page``)
            pages = count if isinstance(count, int) else (page + 1 if len(rows) >= 100 else page)
            for row in rows:
                if not isinstance(row, dict):
                    raise BadResponse("GET /Payments: a payment is not an object")
                got = applied_from(row)
                if got.invoice_remote_id in chunk:
                    found.append(got)
            page += 1
    return found


def payment_account_problem(conn: XeroConnector, code: str) -> str | None:
    from synccli.connectors.xero import _where_string

    body = conn.http.json(
        "GET", f"{API}/Accounts", params={"where": f"Code=={_where_string(code)}"}
    )
    rows = body.get("Accounts") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise BadResponse("GET /Accounts: no Accounts list in the response")
    exact = [a for a in rows if isinstance(a, dict) and a.get("Code") == code]
    if not exact:
        return f"Xero has no account with code {code!r} (payment_account_code)"
    account = exact[0]
    if (account.get("Status") or "ACTIVE") != "ACTIVE":
        return f"Xero's account {code} is {account.get('Status')}: payments cannot go into it"
    if account.get("Type") != "BANK" and account.get("EnablePaymentsToAccount") is not True:
        return (
            f"Xero's account {code} ({account.get('Name')}) is neither a bank account nor "
            "enabled for payments: tick 'Enable payments to this account' in Xero's chart of "
            "accounts, or set payment_account_code to a bank account"
        )
    return None
