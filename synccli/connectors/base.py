"""The connector contract and the normalised records every provider is translated into.

A connector knows its provider's wire format and nothing about our tables. Lists come back as
iterators of pages, so a job can commit page by page and memory stays flat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from synccli.connectors.wire import CENT, line_amounts, round_money, stamp_version
from synccli.errors import Rejected, TransientError

if TYPE_CHECKING:
    from synccli.connectors.http import HttpClient

T = TypeVar("T")
UNIT = Decimal("0.0001")  # unit prices are sent to 4 decimals (the store keeps 4)


@dataclass(frozen=True)
class Limits:
    """What a provider allows one connection. ``None`` means no such limit."""

    per_minute: int | None = None
    per_day: int | None = None
    per_month: int | None = None
    concurrency: int | None = None
    bucket_size: float | None = None  # leaky bucket (Lightspeed)
    drip_per_second: float | None = None
    # "N calls a window of S seconds" (Lightspeed X-Series: 300 x registers + 50 per 300 s)
    window_calls: int | None = None
    window_seconds: float | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a job may assume about a provider when planning its calls."""

    lookup_batch: int | None  # ids per get_products call; None = the whole catalogue in one call
    stock_in_product: bool  # product records already carry stock on hand
    idempotency_keys: bool  # the provider honours an idempotency key on writes
    cursor_overlap: timedelta  # how far back to re-read from the stored cursor
    limits: Limits
    full_catalogue_call: bool = False  # one call lists every product (Xero Items)
    invoice_batch: int = 1  # invoices one post call may carry (Xero: a plural envelope)
    catalogue_page: int | None = None  # products a page when listing the whole catalogue
    # Whether the provider's record stamps can be compared with its clock. Unleashed's JSON
    # stamps were seen shifted by the account's time zone (13 h in the 2014 recordings): a
    # stamp there can neither be told to lie in the future nor rank a record's versions
    # against a clamped one, so a pull applies what it reads by value, as a sweep does.
    stamps_on_provider_clock: bool = True
    # Whether a record's stamp is the provider's change counter (Lightspeed X-Series' version,
    # carried as an instant), not a time: it orders changes, and none can lie in the future.
    version_stamps: bool = False
    # What an order may ask of this provider's invoices (issue 22). ``invoices add`` refuses an
    # order that asks for one the provider lacks, naming it; README's provider table lists
    # them; docs/providers.md gives each one's source.
    documents: DocumentSupport = field(default_factory=lambda: DocumentSupport())
    # post-invoices looks up and creates the customers and products of a run's invoices
    # together (``find_customers_many``, ``create_customers``, ``create_products``), in one
    # call each where the provider takes several records at once; and, where one call reads
    # the whole catalogue and the provider refuses a second product with a code it has
    # (``code_taken``), creates a product the last pull did not see without looking it up
    # first (Xero).
    dependency_batch: bool = False

    def shown_stamp(self, value: datetime | None) -> datetime | dict[str, int] | None:
        """A stored cursor or record stamp as reports show it: the instant, or ``{"version":
        N}`` where stamps are versions (kept as instants after 1970, which would read as 1970
        dates and mean nothing to anyone)."""
        if value is None or not self.version_stamps:
            return value
        return {"version": stamp_version(value)}


@dataclass(frozen=True)
class DocumentSupport:
    """What a provider's API lets an order carry beyond tax-exclusive product lines. Each field
    is False (or "none") where the API cannot do it; the reason is in docs/providers.md."""

    # prices that include tax: "native" (Xero ``LineAmountTypes: Inclusive``), "converted"
    # (the lines go as exclusive prices, see InvoiceDraft.exclusive_lines, and a cent left over
    # as an untaxed rounding line against the connection's ``charge_item``) or "none"
    tax_inclusive: str = "none"
    # lines without a product code (shipping, surcharges, discounts, gift cards): "native" (a
    # line needs no product: Xero's AccountCode line), "charge_item" (posted against the
    # service item named in the connection's ``charge_item`` setting) or "none"
    codeless_lines: str = "none"
    # the customer's payments: "in_sale" (the sale carries them and is paid in full when rung
    # up: they must add up to its total, Lightspeed), "applied" (each applied to the posted
    # invoice afterwards, exactly once, into the connection's ``payment_account_code``: Xero's
    # PUT /Payments, see Connector.apply_payments) or "none"
    payments: str = "none"
    # refunds of a posted order: "credit_note" (a credit note allocated to the order's invoice,
    # Xero), "return_sale" (a sale with negative quantities naming the original, X-Series),
    # "sale_refund" (``POST Sale/{id}/refund.json``, whole quantities of the sale's lines only:
    # no amount on a line, R-Series) or "none"
    refunds: str = "none"

    def lacks(
        self,
        *,
        tax_inclusive: bool = False,
        codeless: bool = False,
        payments: bool = False,
        refund: bool = False,
        refund_amount: bool = False,
    ) -> list[str]:
        """What of this the provider cannot do, in words for a one-line refusal."""
        missing = []
        if tax_inclusive and self.tax_inclusive == "none":
            missing.append("tax-inclusive prices (prices_include_tax)")
        if codeless and self.codeless_lines == "none":
            missing.append("lines without a product code (sku)")
        if payments and self.payments == "none":
            missing.append("payments (payments)")
        if refund and self.refunds == "none":
            missing.append("refunds (refund_of)")
        elif refund_amount and self.refunds == "sale_refund":
            missing.append("refunds of an amount on a line (lines[].amount: refund a quantity)")
        return missing


def without_nul(text: str) -> str:
    """``text`` less any NUL (U+0000): PostgreSQL's text cannot hold one (a whole batch of a
    pull was refused for it, on every run), and a JSON answer may carry ``\\u0000``. Dropped
    as the record is read, so both stores keep the same text and the next read compares equal."""
    return text.replace("\x00", "") if "\x00" in text else text


@dataclass
class RemoteProduct:
    remote_id: str
    code: str
    name: str
    description: str | None = None
    price: Decimal | None = None
    active: bool = True
    updated_at: datetime | None = None
    stock: Decimal | None = None  # set when the provider returns stock with the product
    # A 64-bit digest of the record as the provider wrote it, where the connector gives one
    # (Xero): equal digests are equal records, so a link keeping the digest of the record it was
    # applied from needs nothing applied while the provider answers the same. Not compared.
    fingerprint: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.code, self.name = without_nul(self.code), without_nul(self.name)
        if self.description is not None:
            self.description = without_nul(self.description)


@dataclass
class RemoteStock:
    remote_id: str  # the product's remote id
    quantity: Decimal
    code: str | None = None
    updated_at: datetime | None = None


@dataclass
class RemoteCustomer:
    remote_id: str
    name: str
    email: str | None = None
    account_number: str | None = None
    active: bool = True
    updated_at: datetime | None = None
    # further codes the provider knows the customer by (Xero: a ContactNumber besides the
    # AccountNumber); matched like the account number
    other_codes: tuple[str, ...] = ()


@dataclass
class NewProduct:
    """A product created at sale time from an order line."""

    code: str
    name: str
    price: Decimal
    description: str | None = None
    tax_code: str | None = None
    account_code: str | None = None


@dataclass
class NewCustomer:
    """A customer created at sale time from an order."""

    name: str
    email: str | None = None
    account_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass
class InvoiceLine:
    product_remote_id: str
    code: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_code: str | None = None
    account_code: str | None = None
    tax_rate: Decimal = Decimal("0")  # fraction, e.g. 0.15; used where totals must reconcile
    # "product", or a line without a product code ("shipping", "discount", ...: no product id
    # nor code), which a connector posts as its provider allows (``DocumentSupport``)
    kind: str = "product"

    @property
    def codeless(self) -> bool:
        return self.kind != "product"


@dataclass
class PaymentLine:
    """A payment the customer made, sent with the invoice where the provider takes it."""

    amount: Decimal
    date: datetime
    method: str
    reference: str | None = None


def payment_type(settings: dict[str, Any], method: str | None) -> str:
    """The provider's payment type for a payment method: the connection's ``payment_types``
    (``card=3,cash=1``; the method compared case-insensitively), else its ``payment_type_id``."""
    default = str(settings.get("payment_type_id") or "")
    if not method:
        return default
    for pair in str(settings.get("payment_types") or "").split(","):
        name, _, value = pair.partition("=")
        if value.strip() and name.strip().casefold() == method.strip().casefold():
            return value.strip()
    return default


@dataclass
class RefundTarget:
    """The posted order a refund gives money back on: its number and the provider's id of its
    invoice (sale); ``on``: the refund's date (an allocation's); ``known``: the provider's ids
    of the order's other refunds the store has recorded (a look-up never takes one of them for
    this refund); ``due``: what the invoice has left to pay as our own records have it (we
    posted it and applied every payment of it), None when they cannot tell (read it);
    ``detail``: what the provider's answer to the order's post held that a refund needs
    (``PostedInvoice.detail``), None when the store has none; ``lines``: the refund's own lines,
    when known before its look-up (a look-up compares what it finds with them)."""

    number: str
    remote_id: str
    on: datetime
    known: frozenset[str] = frozenset()
    due: Decimal | None = None
    detail: dict[str, Any] | None = None
    lines: tuple[InvoiceLine, ...] = ()


class RefusedAfterCreate(Rejected):
    """The provider refused a later step of a write whose first call created the record (a
    credit note's allocation): the record exists, so the job looks it up before any retry,
    never posts it again."""


@dataclass
class InvoiceDraft:
    """An order ready to post: customer and products already exist remotely."""

    number: str
    date: datetime
    currency: str
    customer_remote_id: str
    lines: list[InvoiceLine]
    due_date: datetime | None = None
    reference: str | None = None
    total: Decimal | None = None  # the shop's total (tax inclusive), checked against the lines
    # the lines' unit prices include tax (the order's ``prices_include_tax``); the money rule
    # for both modes is wire.line_amounts
    prices_include_tax: bool = False
    payments: list[PaymentLine] = field(default_factory=list)
    # an earlier attempt got no clear answer (the job looked the invoice up first and did not
    # find it): a connector may check once more before it reports a refusal
    resend: bool = False
    # a refund of this posted order: the lines are what is given back (positive quantities
    # and amounts), posted as the provider takes refunds (``DocumentSupport.refunds``)
    refund_of: RefundTarget | None = None

    def exclusive_lines(self) -> list[InvoiceLine]:
        """The lines as a provider that takes only exclusive prices must be sent them, so that
        its total (each line by the exclusive money rule) is the order's to the cent.

        Each line's exclusive unit price (4 decimals) is chosen so that round2(q x u) plus its
        tax round2(round2(q x u) x rate) is the inclusive line's round2(q x p) where any price
        can give it (nearest the inclusive rule's amount before tax); some inclusive totals no
        exclusive amount reaches (at 15%, 0.04: 0.03 gives 0.03, 0.04 gives 0.05), and what is
        left over (a cent or two) becomes one untaxed rounding line without a product code.
        Exclusive orders are returned as they are."""
        if not self.prices_include_tax:
            return list(self.lines)
        out: list[InvoiceLine] = []
        left = Decimal(0)
        for line in self.lines:
            unit = exclusive_unit_price(line.quantity, line.unit_price, line.tax_rate)
            net, tax = line_amounts(line.quantity, unit, line.tax_rate)
            gross = round_money(line.quantity * line.unit_price)
            left += gross - net - tax
            out.append(replace(line, unit_price=unit))
        if left:
            out.append(
                InvoiceLine(
                    product_remote_id="",
                    code="",
                    description="Rounding (the order's prices include tax)",
                    quantity=Decimal(1),
                    unit_price=left,
                    kind="other",
                )
            )
        return out


def exclusive_unit_price(quantity: Decimal, unit_price: Decimal, rate: Decimal) -> Decimal:
    """The 4-decimal exclusive unit price whose line, by the exclusive money rule, totals the
    inclusive line round2(quantity x unit_price), or the one nearest the inclusive rule's
    amount before tax when none does (see InvoiceDraft.exclusive_lines)."""
    if not quantity:
        return (unit_price / (1 + rate)).quantize(UNIT, ROUND_HALF_UP)
    gross = round_money(quantity * unit_price)
    net, _ = line_amounts(quantity, unit_price, rate, inclusive=True)
    nearest = None
    for cents in (0, -1, 1, -2, 2):
        unit = ((net + CENT * cents) / quantity).quantize(UNIT, ROUND_HALF_UP)
        amount, tax = line_amounts(quantity, unit, rate)
        if amount + tax == gross:
            return unit
        if nearest is None:
            nearest = unit
    assert nearest is not None
    return nearest


@dataclass
class PaymentToApply:
    """A payment to apply to an invoice the provider has (``documents.payments == "applied"``).
    ``reference`` is unique per order and payment: the look-up after a lost answer finds the
    payment by it."""

    invoice_remote_id: str
    amount: Decimal
    date: datetime
    reference: str
    account_code: str


@dataclass
class AppliedPayment:
    """A payment the provider holds against an invoice."""

    remote_id: str
    invoice_remote_id: str
    amount: Decimal | None
    reference: str
    status: str | None = None


@dataclass
class PostedInvoice:
    remote_id: str
    number: str
    total: Decimal | None = None
    status: str | None = None
    # what the merchant should know of a posted document (a refund's credit left on the
    # contact because the invoice was paid meanwhile), shown by `invoices show`
    note: str | None = None
    # what the provider's answer held that a later refund of it needs and would otherwise
    # read again (R-Series: the sale's SaleLines), kept with the job; JSON-ready
    detail: dict[str, Any] | None = None


@dataclass
class Page(Generic[T]):
    """One page of a list. ``cursor`` is the value the stored cursor may advance to once this page
    is committed (None when the stream is not ordered by time and must be read to the end, or
    when the connector cannot yet vouch that no earlier record slid past unread)."""

    records: list[T]
    cursor: datetime | None = None
    number: int = 1
    errors: list[str] = field(default_factory=list)  # records of this page that could not be read
    # this page begins another read of the whole listing (it changed while it was paged):
    # what earlier pages showed may since have gone, so a "seen" set starts again here
    relisted: bool = False
    # how many records the whole listing holds, when the provider says so (Xero's one Items
    # list, Unleashed's Pagination.NumberOfItems, Lightspeed's older @attributes.count): for a
    # progress line's total only, never to decide where the listing ends
    total: int | None = None
    # fingerprints of records left out of ``records`` because the caller already holds them
    # (``Connector.whole_catalogue``): read, and the same as when they were last applied
    unchanged: list[int] = field(default_factory=list)
    # when this page was read: the reading run's clock just before the call that answered it
    # (set by the job as it reads, see sync/stream.timed_pages; None where no job set it)
    read_at: datetime | None = None


class KnownRecords(Protocol):
    """What the caller of ``Connector.whole_catalogue`` holds: the fingerprints of the records
    it last applied."""

    def holds_exactly(self, fingerprints: Sequence[int]) -> bool:
        """Whether a listing of records with these fingerprints is what the caller holds, as a
        whole: then no record need be read, nor looked for one by one in ``held``."""
        ...

    def held(self) -> Container[int]:
        """The fingerprints the caller holds, one by one."""
        ...


class _NothingKnown:
    def holds_exactly(self, fingerprints: Sequence[int]) -> bool:
        return not fingerprints

    def held(self) -> Container[int]:
        return ()


NOTHING_KNOWN: KnownRecords = _NothingKnown()  # a caller that holds no record: read them all


class Connector(ABC):
    """One merchant's account at one provider."""

    provider: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, http: HttpClient, settings: dict[str, Any]) -> None:
        self.http = http
        self.settings = settings

    # products and stock -------------------------------------------------------------------
    @abstractmethod
    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        """Products created or changed after ``since`` (all when None), archived ones included."""

    def whole_catalogue(self, known: KnownRecords) -> Iterator[Page[RemoteProduct]]:
        """Every product (``capabilities.full_catalogue_call``), leaving out of the pages'
        ``records`` those whose ``fingerprint`` ``known`` holds: their fingerprints are listed in
        ``Page.unchanged`` instead, unparsed (all of them, none looked for one by one, where
        ``known.holds_exactly`` the listing's). Where the connector gives no fingerprints, this
        is ``changed_products(None)``."""
        return self.changed_products(None)

    @abstractmethod
    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        """Stock positions changed after ``since``. Empty when stock comes inside products."""

    @abstractmethod
    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        """The given products with stock, in as few calls as the provider allows. Ids the provider
        no longer knows are simply absent; archived products come back with ``active=False``."""

    @abstractmethod
    def find_product(self, code: str) -> RemoteProduct | None:
        """The product whose code is exactly ``code`` (never a prefix match), with stock."""

    @abstractmethod
    def create_product(self, product: NewProduct) -> RemoteProduct:
        """Create a product; used only at sale time for a product the provider lacks."""

    def create_products(self, products: list[NewProduct]) -> list[RemoteProduct | Rejected]:
        """Create several products in as few calls as the provider allows: one outcome per
        product, in order (created, or ``Rejected`` for that one alone). A failure of a call
        itself is raised for all of them."""
        out: list[RemoteProduct | Rejected] = []
        for product in products:
            try:
                out.append(self.create_product(product))
            except Rejected as err:
                out.append(err)
        return out

    def code_taken(self, messages: list[str]) -> bool:
        """Whether a refused product create says the provider has that code already (its codes
        are unique: the product was created there since we last read the catalogue). The
        caller then looks it up and links it. Only where this can be told apart may a create
        go without a look-up first (see :attr:`Capabilities.dependency_batch`)."""
        return False

    # customers -----------------------------------------------------------------------------
    @abstractmethod
    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        """Customers created or changed after ``since`` (all when None)."""

    @abstractmethod
    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        """Customers whose email (case-insensitive) or account number matches exactly."""

    # customers one get_customers call looks up (None: no look-up by id)
    customer_ids_a_call: ClassVar[int | None] = None

    def get_customers(self, remote_ids: list[str]) -> list[RemoteCustomer] | None:
        """The given customers (archived ones too), in as few calls as the provider allows; ids
        it no longer knows are absent. None: the provider has no look-up by id, and the next
        poll of the customers reads them instead (webhook hints, #23)."""
        return None

    @abstractmethod
    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        """Create a customer with a name the provider accepts. Never updates an existing one."""

    def find_customers_many(
        self, queries: list[tuple[str | None, str | None]]
    ) -> list[list[RemoteCustomer] | Rejected]:
        """``find_customers`` for each (email, account) pair, in as few calls as the provider
        allows: one outcome per pair, in order (its matches, or ``Rejected`` when that pair
        cannot be looked up). A failure of a call itself is raised."""
        out: list[list[RemoteCustomer] | Rejected] = []
        for email, account in queries:
            try:
                out.append(self.find_customers(email=email, account=account))
            except Rejected as err:
                out.append(err)
        return out

    def create_customers(self, customers: list[NewCustomer]) -> list[RemoteCustomer | Rejected]:
        """Create several customers in as few calls as the provider allows: one outcome per
        customer, in order (created, or ``Rejected`` for that one alone). A failure of a call
        itself (transient, budget, auth) is raised for all of them."""
        out: list[RemoteCustomer | Rejected] = []
        for customer in customers:
            try:
                out.append(self.create_customer(customer))
            except Rejected as err:
                out.append(err)
        return out

    def refinds_customer(self, email: str | None, account: str | None) -> bool:
        """Whether a customer created with this email / account number, its answer lost, is
        found again by the next attempt (a look-up, a unique name or a derived code), so that
        it is not created twice. When not, the caller must not create it blindly again."""
        return True

    # invoices ------------------------------------------------------------------------------
    @classmethod
    def unmatchable(cls, value: str) -> str | None:
        """Why this provider's look-ups cannot compare ``value`` (an order number, a SKU, an email
        or an account number) exactly, or None. Such a value could make a look-up miss our own
        record after a lost answer, so ``invoices add`` refuses it, naming the field."""
        return None

    def number_taken(self, messages: list[str]) -> bool:
        """Whether a refusal of an invoice says its number is in use at the provider already:
        it may be ours, posted before the store was restored from an older backup. The caller
        looks it up then instead of telling the merchant the invoice was refused."""
        return False

    @abstractmethod
    def find_invoice(self, number: str) -> PostedInvoice | None:
        """The invoice (sale, sales order) we posted under ``number``, if the provider has it."""

    def finish_found(self, found: PostedInvoice) -> PostedInvoice:
        """Bring an invoice the look-up found (an earlier run's answer was lost) to the state a
        post leaves it in, or raise ``Rejected`` when it cannot count as posted. Most providers
        have nothing left to do."""
        return found

    @abstractmethod
    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """Post an invoice. Raises ``Rejected`` with the provider's messages when it refuses it."""

    def post_refund(self, refund: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """Post a refund (``refund.refund_of`` names the posted order) as the provider allows;
        the answer's total is the amount given back (positive). Only where
        ``capabilities.documents.refunds`` is not "none"."""
        raise Rejected(f"{self.provider} cannot take refunds (README: the provider table)")

    def find_refund(self, number: str, target: RefundTarget) -> PostedInvoice | None:
        """The refund we posted under ``number``, if the provider has it, brought to the state
        a post leaves it in (Xero: allocated to the invoice, when it was not yet)."""
        raise Rejected(f"{self.provider} cannot take refunds (README: the provider table)")

    def post_invoices(
        self, invoices: list[tuple[InvoiceDraft, str]]
    ) -> list[PostedInvoice | Rejected | TransientError]:
        """Post several invoices, each with its own idempotency key, in as few calls as the
        provider allows (``capabilities.invoice_batch``). Returns one outcome per invoice, in
        order: the posted invoice, the ``Rejected`` error for that invoice alone, or a
        ``TransientError`` when the provider's answer leaves that invoice unclear (it may exist:
        it is looked up before it is sent again). A failure of the call itself (transient,
        budget, auth) is raised for the whole batch."""
        results: list[PostedInvoice | Rejected | TransientError] = []
        for draft, key in invoices:
            try:
                results.append(self.post_invoice(draft, key))
            except Rejected as err:
                results.append(err)
        return results

    # payments applied to posted invoices (``capabilities.documents.payments == "applied"``) --
    def apply_payments(
        self, payments: list[PaymentToApply]
    ) -> list[AppliedPayment | Rejected | TransientError]:
        """Apply payments to invoices the provider has, in as few calls as it allows: one outcome
        per payment, in order (as :meth:`post_invoices`). A failure of the call itself is
        raised for all of them."""
        raise NotImplementedError(f"{self.provider} does not apply payments to invoices")

    def find_payments(self, invoice_remote_ids: list[str]) -> list[AppliedPayment]:
        """Every payment the provider holds against these invoices (deleted ones included)."""
        raise NotImplementedError(f"{self.provider} does not apply payments to invoices")

    def payment_account_problem(self, code: str) -> str | None:
        """Why the provider will not take payments into the account ``code`` (for ``doctor``),
        or None when it will."""
        return None

    # lists kept between runs ---------------------------------------------------------------
    def prime(self, name: str, value: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Hand the connector a list an earlier run read (see :meth:`reference_lists`). It may
        be stale: a connector re-reads a list that lacks what it is asked for."""

    def reference_lists(self) -> dict[str, dict[str, Any]]:
        """Lists this run read afresh, by name, for the store to keep for later runs. Most
        providers keep none."""
        return {}

    # operations ----------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """One cheap authenticated call for ``doctor``; returns the response's Date header."""
        raise NotImplementedError

    def ids(self) -> dict[str, list[dict[str, str]]]:
        """For each id setting the provider's own list of what it may be (``{"tenant_id":
        [{"id": ..., "name": ...}]}``), for ``connections ids``."""
        raise NotImplementedError
