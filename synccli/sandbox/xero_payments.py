"""The Xero simulator's chart of accounts and payments: ``GET /Accounts``, ``PUT /Payments`` and
``GET /Payments`` (XeroSandbox registers these routes; the state lives in its tenant extras).

Sources (the provider notes' keys: OAS is ``xero_accounting.yaml`` v16.1.0, kept in tests/specs):

- Accounts: OAS ``getAccounts`` (``where``, ``order``; the example's 091 "Business Savings
  Account", Type BANK, and 200 "Sales", REVENUE, both ``EnablePaymentsToAccount: false``) and
  ``createPayments`` (its example pays into 970 "Owner A Funds Introduced").
- A payment goes into a BANK account or one with "Enable payments to this account" ticked;
  any other answers "Account type is invalid for making a payment to/from" (a production
  integration matches that message and retries with "BANK accounts OR non-bank accounts with
  EnablePaymentsToAccount=true"; help.request.finance "asset account isn't payment-enabled"
  and help.dubsado.com "payment account ... enable payments" say the same). Neither Code nor
  AccountID: "You must specify an Account code or Account ID for the payment" (bill.com's Xero
  sync help page quotes it).
- Only an AUTHORISED invoice takes a payment (a draft, or one already PAID, does not): "Payments
  can only be made against Authorised documents" (Workato's and KennelBooker's help pages quote
  it; Wise-Pay's for an invoice already paid).
- More than the amount due: "Payment amount exceeds the amount outstanding on this document",
  and the refused element still carries a PaymentID and ``Status: AUTHORISED`` beside
  ``HasValidationErrors: true`` (OAS ``createPayments`` 200 example, exactly so). So only the
  validation flags tell a refusal, never the id.
- ``summarizeErrors=false`` answers 200 with each element's outcome; the default answers 400
  ``ValidationException`` naming the bad elements while valid siblings are created (as for every
  other write, see XeroSandbox._write). ``Idempotency-Key`` replays like the other writes.
- A payment lowers the invoice's ``AmountDue``, raises ``AmountPaid`` and is listed in its
  ``Payments``; an invoice paid in full becomes ``PAID`` (OAS ``Invoice.Status``: "PAID" is set by
  the system; the provider notes §5).
- ``GET /Payments`` is paged like Invoices (OAS ``getPayments``: ``page``, ``pageSize``,
  ``where`` "Filter by an any element", ``order``); integrations find an invoice's payments with
  ``where=Invoice.InvoiceID==Guid("…")`` (the notes' §2 ``AccountID=Guid("…")`` form).
- Dates: as on invoices (``YYYY-MM-DD``, ISO date-time or ``/Date(ms)/``); anything else is
  refused "'X' is not a valid date" as an invoice's is.

Our own texts (Xero's are not documented): an unknown invoice or account, a missing date and an
amount that is not a positive number of cents.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from synccli.sandbox.core import Request, Response
from synccli.sandbox.data import Invoice, World
from synccli.sandbox.xero import (
    CENT,
    WhereError,
    _dec,
    _num,
    _order_key,
    _sort,
    _TenantExtra,
    _words,
    parse_body_date,
    parse_modified_since,
    xero_date,
    xero_day,
)

if TYPE_CHECKING:
    from synccli.sandbox.xero import XeroSandbox

# The chart of accounts every tenant starts with (tests change a tenant's copy).
DEFAULT_ACCOUNTS: list[dict[str, Any]] = [
    {"Code": "090", "Name": "Business Bank Account", "Type": "BANK"},
    # OAS getAccounts example: a BANK account need not tick EnablePaymentsToAccount
    {"Code": "091", "Name": "Business Savings Account", "Type": "BANK"},
    {"Code": "200", "Name": "Sales", "Type": "REVENUE", "TaxType": "OUTPUT2"},
    {"Code": "260", "Name": "Other Revenue", "Type": "REVENUE", "TaxType": "OUTPUT2"},
    {"Code": "610", "Name": "Accounts Receivable", "Type": "CURRENT"},
    # OAS createPayments example: a payment into 970, an equity account with payments enabled
    {
        "Code": "970",
        "Name": "Owner A Funds Introduced",
        "Type": "EQUITY",
        "EnablePaymentsToAccount": True,
    },
]
ACCOUNT_FIELDS = _words(
    "AccountID Code Name Type TaxType EnablePaymentsToAccount Status Class BankAccountNumber "
    "CurrencyCode UpdatedDateUTC"
)
PAYMENT_FIELDS = _words(
    "PaymentID Invoice Account Date Amount BankAmount Reference Status PaymentType "
    "UpdatedDateUTC IsReconciled CurrencyRate"
)
NO_ACCOUNT = "You must specify an Account code or Account ID for the payment"
BAD_ACCOUNT = "Account type is invalid for making a payment to/from"
NOT_AUTHORISED = "Payments can only be made against Authorised documents"
OVER_DUE = "Payment amount exceeds the amount outstanding on this document"


def accounts_of(extra: _TenantExtra) -> list[dict[str, Any]]:
    """The tenant's chart of accounts (made on first use: ids stay the same afterwards)."""
    if not extra.accounts:
        extra.accounts = [
            {
                "AccountID": str(uuid.uuid4()),
                "Status": "ACTIVE",
                "EnablePaymentsToAccount": False,
                **copy.deepcopy(a),
            }
            for a in DEFAULT_ACCOUNTS
        ]
    return extra.accounts


def _class_of(kind: str) -> str:
    return {"BANK": "ASSET", "CURRENT": "ASSET", "REVENUE": "REVENUE", "EQUITY": "EQUITY"}.get(
        kind, "EXPENSE"
    )


class PaymentRoutes:
    """The handlers; ``app`` is the XeroSandbox they are registered on."""

    def __init__(self, app: XeroSandbox) -> None:
        self.app = app

    # Accounts --------------------------------------------------------------------------------
    def get_accounts(self, req: Request) -> Response:
        _, _, extra = self.app._tenant(req)
        records = [{**a, "Class": _class_of(a["Type"])} for a in accounts_of(extra)]
        try:
            records = self.app._filter(req, "Account", ACCOUNT_FIELDS, records)
        except WhereError as err:
            return self.app._query_error(err)
        records = _sort(records, _order_key(req.query.get("order"), [("Name", False)]), "Code")
        return self.app._list("Accounts", records)

    # Payments --------------------------------------------------------------------------------
    def get_payments(self, req: Request) -> Response:
        _, _, extra = self.app._tenant(req)
        since = parse_modified_since(req.header("if-modified-since"))
        records = [p for p in extra.payments.values() if since is None or p["_updated"] > since]
        records = [{k: v for k, v in p.items() if not k.startswith("_")} for p in records]
        try:
            records = self.app._filter(req, "Payment", PAYMENT_FIELDS, records)
        except WhereError as err:
            return self.app._query_error(err)
        records = _sort(
            records, _order_key(req.query.get("order"), [("UpdatedDateUTC", False)]), "PaymentID"
        )
        paging = self.app._paging(req)
        if paging is None:
            return self.app._list("Payments", records)
        return self.app._paged("Payments", records, paging)

    def write_payments(self, req: Request) -> Response:
        return self.app._write(req, "Payments", self.one_payment)

    def one_payment(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        if isinstance(el.get("CreditNote"), dict) and not el.get("Invoice"):
            return self.one_credit_payment(el, extra)
        errors: list[str] = []
        inv = self._invoice(el.get("Invoice"), world, errors)
        account = self._account(el.get("Account"), extra, errors)
        raw_date = el.get("Date")
        paid_on = parse_body_date(raw_date)
        if raw_date in (None, ""):
            errors.append("A valid payment date must be specified")
        elif paid_on is None:
            errors.append(f"'{raw_date}' is not a valid date")
        amount = _dec(el.get("Amount"))
        if amount is None or amount <= 0 or amount != amount.quantize(CENT):
            errors.append("Payment amount must be a positive amount in cents")
            amount = None
        if inv is not None and inv.body.get("Status") != "AUTHORISED":
            errors.append(NOT_AUTHORISED)
        elif (
            inv is not None
            and amount is not None
            and amount > Decimal(str(inv.body.get("AmountDue", 0)))
        ):
            errors.append(OVER_DUE)
        now = self.app.clock.now()
        pay_id = str(uuid.uuid4())
        rec: dict[str, Any] = {
            "PaymentID": pay_id,
            "Date": xero_day(paid_on) if paid_on else raw_date,
            "BankAmount": _num(amount) if amount is not None else el.get("Amount"),
            "Amount": _num(amount) if amount is not None else el.get("Amount"),
            "Reference": str(el.get("Reference") or ""),
            "CurrencyRate": 1,
            "PaymentType": "ACCRECPAYMENT",
            # as the OAS example answers even a refused payment
            "Status": "AUTHORISED",
            "UpdatedDateUTC": xero_date(now),
            "HasAccount": True,
            "IsReconciled": False,
            "Account": _account_ref(account) if account else el.get("Account"),
            "Invoice": _invoice_ref(inv) if inv else el.get("Invoice"),
        }
        if errors:
            with self.app.counters.lock:
                self.app.counters.requests.append(
                    {"kind": "payment", "id": None, "body": el, "rejected": True}
                )
            return {**rec, "HasValidationErrors": True}, errors
        assert inv is not None and amount is not None and paid_on is not None
        self._apply(inv, pay_id, amount, rec, now)
        extra.payments[pay_id] = {**rec, "Invoice": _invoice_ref(inv), "_updated": now}
        self.app.record_write("payment", pay_id, el, True)
        return {**rec, "Invoice": _invoice_ref(inv), "HasValidationErrors": False}, []

    def one_credit_payment(self, el: dict[str, Any], extra: _TenantExtra) -> tuple[dict, list[str]]:
        """Money paid back on a credit note (a refund paid out): OAS ``Payment.CreditNote``
        and PaymentType ``ARCREDITPAYMENT``; the same refusals as an invoice's payment (only
        an AUTHORISED document, never over what it has outstanding: its RemainingCredit)."""
        errors: list[str] = []
        ident = str(el["CreditNote"].get("CreditNoteID") or "").lower()
        note = extra.credit_notes.get(ident)
        if note is None:
            errors.append(f"Credit Note {ident or '(none)'} could not be found")
        account = self._account(el.get("Account"), extra, errors)
        paid_on = parse_body_date(el.get("Date"))
        if paid_on is None:
            errors.append("A valid payment date must be specified")
        amount = _dec(el.get("Amount"))
        if amount is None or amount <= 0 or amount != amount.quantize(CENT):
            errors.append("Payment amount must be a positive amount in cents")
            amount = None
        if note is not None and note["Status"] != "AUTHORISED":
            errors.append(NOT_AUTHORISED)
        elif (
            note is not None
            and amount is not None
            and amount > Decimal(str(note["RemainingCredit"]))
        ):
            errors.append(OVER_DUE)
        now, pay_id = self.app.clock.now(), str(uuid.uuid4())
        rec: dict[str, Any] = {
            "PaymentID": pay_id,
            "Date": xero_day(paid_on) if paid_on else el.get("Date"),
            "Amount": _num(amount) if amount is not None else el.get("Amount"),
            "Reference": str(el.get("Reference") or ""),
            "PaymentType": "ARCREDITPAYMENT",
            "Status": "AUTHORISED",
            "UpdatedDateUTC": xero_date(now),
            "Account": _account_ref(account) if account else el.get("Account"),
            "CreditNote": {"CreditNoteID": ident},
        }
        if errors or note is None or amount is None:
            return {**rec, "HasValidationErrors": True}, errors
        left = Decimal(str(note["RemainingCredit"])) - amount
        note["RemainingCredit"] = _num(left)
        note.setdefault("Payments", []).append({"PaymentID": pay_id, "Amount": rec["Amount"]})
        note["Status"] = "PAID" if left == 0 else note["Status"]
        note["UpdatedDateUTC"] = xero_date(now)
        rec["CreditNote"]["CreditNoteNumber"] = note["CreditNoteNumber"]
        extra.payments[pay_id] = {**rec, "_updated": now}
        self.app.record_write("payment", pay_id, el, True)
        return {**rec, "HasValidationErrors": False}, []

    def _invoice(self, sent: Any, world: World, errors: list[str]) -> Invoice | None:
        if not isinstance(sent, dict) or not (sent.get("InvoiceID") or sent.get("InvoiceNumber")):
            errors.append("An Invoice or CreditNote must be specified for the payment")
            return None
        ident = str(sent.get("InvoiceID") or "").lower()
        inv = world.invoices.get(ident) if ident else None
        if inv is None and not ident:
            number = sent.get("InvoiceNumber")
            inv = next((i for i in world.invoices.values() if i.number == number), None)
        if inv is None:
            errors.append(
                f"Invoice {sent.get('InvoiceID') or sent.get('InvoiceNumber')} could not be found"
            )
        return inv

    def _account(self, sent: Any, extra: _TenantExtra, errors: list[str]) -> dict | None:
        if not isinstance(sent, dict) or not (sent.get("Code") or sent.get("AccountID")):
            errors.append(NO_ACCOUNT)
            return None
        code, ident = sent.get("Code"), str(sent.get("AccountID") or "").lower()
        found = next(
            (
                a
                for a in accounts_of(extra)
                if (ident and a["AccountID"] == ident) or (not ident and a["Code"] == code)
            ),
            None,
        )
        if found is None:
            errors.append(f"Account {code or ident} could not be found")
            return None
        payable = found["Type"] == "BANK" or found.get("EnablePaymentsToAccount") is True
        if not payable or found.get("Status") != "ACTIVE":
            errors.append(BAD_ACCOUNT)
        return found

    def _apply(
        self, inv: Invoice, pay_id: str, amount: Decimal, rec: dict[str, Any], now: datetime
    ) -> None:
        body = inv.body
        due = Decimal(str(body.get("AmountDue", 0))) - amount
        paid = Decimal(str(body.get("AmountPaid", 0))) + amount
        body["AmountDue"], body["AmountPaid"] = _num(due), _num(paid)
        body.setdefault("Payments", []).append(
            {
                "PaymentID": pay_id,
                "Date": rec["Date"],
                "Amount": rec["Amount"],
                "Reference": rec["Reference"],
                "CurrencyRate": 1,
                "HasAccount": True,
                "HasValidationErrors": False,
            }
        )
        if due == 0:
            body["Status"] = "PAID"
            body["FullyPaidOnDate"] = rec["Date"]
        body["UpdatedDateUTC"] = xero_date(now)
        inv.updated_at = now


def _account_ref(a: dict[str, Any]) -> dict[str, Any]:
    return {"AccountID": a["AccountID"], "Code": a["Code"], "Name": a["Name"]}


def _invoice_ref(inv: Invoice) -> dict[str, Any]:
    """The invoice as a payment answer carries it (OAS createPayments example, abridged)."""
    body = inv.body
    keep = [
        "Type",
        "InvoiceID",
        "InvoiceNumber",
        "Reference",
        "AmountDue",
        "AmountPaid",
        "Status",
        "Total",
        "CurrencyCode",
    ]
    out = {k: body[k] for k in keep if k in body}
    out["Contact"] = {"ContactID": body["Contact"]["ContactID"], "Name": body["Contact"]["Name"]}
    out.update(Payments=[], CreditNotes=[], Prepayments=[], Overpayments=[], LineItems=[])
    out.update(HasErrors=False, IsDiscounted=False)
    return out
