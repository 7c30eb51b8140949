"""The link store's tables (SQLAlchemy 2.0). Uniqueness lives in the database, not in Python.

The shop side (products, customers, orders, order_lines) is documented in README.md: the shop may
read and write those tables directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no zones), always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _naive_utc(value)

    def bind_processor(self, dialect: Any) -> Any:
        convert: Callable[[Any], Any] | None
        storage = getattr(self.impl_instance.dialect_impl(dialect), "_storage_format", None)
        if storage == _SQLITE_FORMAT:
            # SQLite's text format is isoformat's, built in C instead of a %-format of seven
            # attributes: 200,000 values in a first pull's links and products
            convert = _sqlite_text
        else:
            convert = super().bind_processor(dialect)
            if convert is None:
                return None
        # A bulk write binds the same timestamp object on every row (a batch's "now" in four
        # columns of 1,000 rows, between per-row stamps): converting it once instead of each
        # time was a fifth of a first pull's store time. The two latest conversions are kept,
        # swapped whole, so threads never see half of one.
        recent: list[tuple[Any, Any, Any, Any]] = [(None, None, None, None)]

        def process(value: Any) -> Any:
            a, a_result, b, b_result = recent[0]
            if value is not None:
                if value is a:
                    return a_result
                if value is b:
                    return b_result
            result = convert(value)
            recent[0] = (value, result, a, a_result)
            return result

        return process

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


_SQLITE_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _naive_utc(value: datetime) -> datetime:
    """``value`` in UTC without its zone (a naive value is taken as UTC already)."""
    zone = value.tzinfo
    if zone is None:
        return value
    if zone is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def _sqlite_text(value: datetime | None) -> str | None:
    """What SQLAlchemy's SQLite DATETIME stores for ``value`` after ``process_bind_param``."""
    return None if value is None else _naive_utc(value).isoformat(" ", "microseconds")


Money = Numeric(18, 4, asdecimal=True)
Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments INTEGER keys


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money, dict[str, Any]: JSON}
    # Every model here maps one Table (no model is mapped to a join or a select), so the bulk
    # helpers in store/ take ``Model.__table__`` as the Table it is.
    __table__: ClassVar[Table]


# --- connections -----------------------------------------------------------------------------
class Connection(Base):
    """One merchant's account at one provider."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credentials: Mapped[str | None] = mapped_column(Text)  # Fernet token of a JSON object
    notify_email: Mapped[str | None] = mapped_column(String(255))
    needs_reauth: Mapped[bool] = mapped_column(Boolean, default=False)
    reauth_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# --- the shop side ---------------------------------------------------------------------------
class Product(Base):
    """A product of the shop whose catalogue the connection feeds (sku unique per connection)."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("connection_id", "sku", name="uq_products_sku"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # The shop's rows outlive their connection: removing it sets this to NULL (README.md)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    sku: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal | None]
    stock: Mapped[Decimal | None]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime | None]


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    account_number: Mapped[str | None] = mapped_column(String(100), index=True)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None]


class Order(Base):
    """An order of the shop, posted as an invoice through the connection it belongs to."""

    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("connection_id", "number", name="uq_orders_number"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    number: Mapped[str] = mapped_column(String(100))
    date: Mapped[datetime]
    currency: Mapped[str] = mapped_column(String(3))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    customer_email: Mapped[str | None] = mapped_column(String(255))
    customer_account: Mapped[str | None] = mapped_column(String(100))
    customer_name: Mapped[str | None] = mapped_column(String(255))
    total: Mapped[Decimal]
    created_at: Mapped[datetime]
    # the lines' unit prices include tax (NULL, as rows written before the column read: no)
    prices_include_tax: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # a refund: the number of the order (same connection) it gives money back on; its lines
    # name the order's lines they refund (``OrderLine.refund_line``). Posted once that order
    # is, as its provider allows (a credit note allocated to the invoice, a return sale).
    refund_of: Mapped[str | None] = mapped_column(String(100), default=None)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.line_no", cascade="all, delete-orphan"
    )
    payments: Mapped[list[OrderPayment]] = relationship(
        order_by="OrderPayment.payment_no", cascade="all, delete-orphan"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (UniqueConstraint("order_id", "line_no"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    quantity: Mapped[Decimal]
    unit_price: Mapped[Decimal]
    tax_code: Mapped[str | None] = mapped_column(String(50))
    tax_rate: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    account_code: Mapped[str | None] = mapped_column(String(50))
    # what the line is: NULL or "product" (a product, matched by ``sku``), or a line without a
    # product code ("shipping", "surcharge", "discount", "gift_card", "other"; ``sku`` empty),
    # which is never matched to a product nor creates one
    kind: Mapped[str | None] = mapped_column(String(20), default=None)
    # a refund's line: the ``line_no`` of the refunded order's line it gives money back on
    refund_line: Mapped[int | None] = mapped_column(Integer, default=None)

    order: Mapped[Order] = relationship(back_populates="lines")


class OrderPayment(Base):
    """A payment the customer made for an order (at checkout), applied with its invoice as the
    provider allows (``Capabilities.documents.payments``)."""

    __tablename__ = "order_payments"
    __table_args__ = (UniqueConstraint("order_id", "payment_no"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    payment_no: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal]
    date: Mapped[datetime]
    method: Mapped[str] = mapped_column(String(50))
    reference: Mapped[str | None] = mapped_column(String(255))
    # Where the provider applies a payment to the posted invoice on its own (Xero): NULL or
    # ``pending`` (not sent), ``posting`` (committed before the call: it may be at the provider,
    # so it is looked up before it is sent again), ``posted`` (``remote_id`` is the provider's),
    # ``refused`` (``error`` says why; sent again on the invoice job's retry schedule). A sale
    # that carries its payments (Lightspeed) leaves these NULL: they go with the sale.
    state: Mapped[str | None] = mapped_column(String(20))
    remote_id: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    posted_at: Mapped[datetime | None]


# --- links, cursors, runs --------------------------------------------------------------------
class Link(Base):
    """A local record bound to a remote one (the OCA connector's binding)."""

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("connection_id", "kind", "remote_id", name="uq_links_remote"),
        UniqueConstraint("connection_id", "kind", "local_id", name="uq_links_local"),
        Index("ix_links_sweep", "connection_id", "kind", "last_synced_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # product | customer
    local_id: Mapped[int] = mapped_column(Id)
    remote_id: Mapped[str] = mapped_column(String(100))
    remote_code: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20), default="linked")  # linked | ghost | archived
    origin: Mapped[str] = mapped_column(String(20), default="matched")  # matched|created|manual
    last_synced_at: Mapped[datetime | None]
    remote_updated_at: Mapped[datetime | None]
    # When the remote record the local one was last applied from was read: the reading run's
    # clock just before the call that answered it. A record read earlier than this is older
    # than what the store holds (a run that stalled after its read while another job stored a
    # newer one) and is not applied (see store/catalogue.claim_reads). NULL: not known yet.
    read_at: Mapped[datetime | None]
    # The same for the product's stock figure, read with the product where the provider's
    # records carry it, else from a stock listing of its own (Unleashed, X-Series): a product
    # record without stock says nothing of how new a stored figure is.
    stock_read_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # A digest of the remote record the local one was last applied from (products of a provider
    # that lists its whole catalogue every pull): an equal one means nothing to apply. NULL:
    # compare the record in full (see sync/products.py).
    fingerprint: Mapped[int | None] = mapped_column(BigInteger)


class SandboxClock(Base):
    """How much faster than real time the simulator a connection points at runs, so its
    connector paces to match. Only the sandbox harness writes a row: a table of its own, not a
    setting, so `connections set` can never speed up the pacing of a merchant's real account."""

    __tablename__ = "sandbox_clocks"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    time_scale: Mapped[float] = mapped_column(Float)


class Cursor(Base):
    __tablename__ = "cursors"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[datetime | None]
    page: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_job", "connection_id", "job", "started_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job: Mapped[str] = mapped_column(String(50))
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE")
    )
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(20), default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(100))


class Lease(Base):
    """Who runs (job, connection) now; a dead run's lease is taken over after it expires."""

    __tablename__ = "leases"

    job: Mapped[str] = mapped_column(String(50), primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


# --- the call ledger -------------------------------------------------------------------------
class ApiCall(Base):
    __tablename__ = "api_calls"
    __table_args__ = (Index("ix_api_calls_conn_at", "connection_id", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(Id)
    at: Mapped[datetime]
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int | None] = mapped_column(Integer)
    ms: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Budget(Base):
    """What the provider last said is left, and whether the day/month budget is spent."""

    __tablename__ = "budgets"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    remaining: Mapped[dict[str, Any]] = mapped_column(default=dict)
    blocked_until: Mapped[datetime | None]
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


# --- the invoice outbox ----------------------------------------------------------------------
class InvoiceJob(Base):
    __tablename__ = "invoice_jobs"
    __table_args__ = (
        UniqueConstraint("connection_id", "order_id", name="uq_invoice_jobs_order"),
        Index("ix_invoice_jobs_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    # pending | posting | posted | failed (rejected, will retry) | gave_up | cancelled
    state: Mapped[str] = mapped_column(String(20), default="pending")
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # rejected attempts only
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    remote_id: Mapped[str | None] = mapped_column(String(100))
    remote_total: Mapped[Decimal | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    posted_at: Mapped[datetime | None]
    # An earlier post may have reached the provider (its answer was lost, or its run stalled or
    # died after ``posting``): the next post looks the invoice up first. Unlike the ``posting``
    # state it survives ``invoices cancel`` and ``invoices retry``.
    maybe_sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # what the provider's answer to the post held that a refund of this order needs
    # (PostedInvoice.detail: R-Series SaleLines), so the refund does not read the sale again
    remote_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    order: Mapped[Order] = relationship()


class InvoiceAttempt(Base):
    __tablename__ = "invoice_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("invoice_jobs.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(Id)
    at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(20))  # posted|found|rejected|transient|budget|auth
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)  # the messages joined, for reading
    # each of the provider's messages whole, in its order (a refusal's ValidationErrors)
    messages: Mapped[list[str] | None] = mapped_column(JSON)


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE")
    )
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class RemoteCustomer(Base):
    """The provider's customers as link-customers last read them (name, email, account only):
    lets matching see rivals read by earlier runs, and ``customers review`` find duplicates
    without spending a call."""

    __tablename__ = "remote_customers"
    __table_args__ = (UniqueConstraint("connection_id", "remote_id", name="uq_remote_customers"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    account_number: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    remote_updated_at: Mapped[datetime | None]
    seen_at: Mapped[datetime]


class ReferenceList(Base):
    """A provider list that rarely changes (Lightspeed's tax categories), kept between runs so
    each run need not spend a call reading it again. A connector re-reads a list that lacks a
    name it is asked for, or that the provider's answers put in doubt."""

    __tablename__ = "reference_lists"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[dict[str, Any]]
    fetched_at: Mapped[datetime]


# --- history and review ----------------------------------------------------------------------
class Event(Base):
    """One changed field of one local record, and the run that changed it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_record", "kind", "local_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(Id)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(20))
    local_id: Mapped[int] = mapped_column(Id)
    field: Mapped[str] = mapped_column(String(50))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]


class ReviewItem(Base):
    """Something for the merchant to look at: an ambiguous match, a record created at sale time."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("connection_id", "kind", "subject", name="uq_review_subject"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(
        String(30)
    )  # ambiguous_customer|created_customer|created_product
    subject: Mapped[str] = mapped_column(String(255))  # what it is about (local id, code)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


# --- webhooks --------------------------------------------------------------------------------
class WebhookEventRow(Base):
    """One change a provider pushed (#23), stored once: a provider's retry of the same event has
    the same ``dedup_key`` and the unique key turns it away. ``state``: ``pending`` (the payload
    carries the record, to apply), ``hint`` (only the id: the next pull fetches it), ``applied``
    or ``done`` (nothing left to do)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("connection_id", "dedup_key", name="uq_webhook_events_dedup"),
        Index("ix_webhook_events_open", "connection_id", "stream", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(30))
    entity_id: Mapped[str] = mapped_column(String(100))
    dedup_key: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10))
    applied_at: Mapped[datetime | None]


class WebhookDay(Base):
    """Per connection and UTC day: signed deliveries accepted, and requests turned away for a
    bad or missing signature (``webhooks status``)."""

    __tablename__ = "webhook_days"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    last_delivery_at: Mapped[datetime | None]
