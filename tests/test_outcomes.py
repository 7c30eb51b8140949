"""Issue 19, line 5: one mapping from an exception to an outcome (exit code, run outcome, invoice
action), used by the CLI, the run records and the invoice worker.

- the table, pinned class by class as the code behaved before it was one table:
                                                      test_table_pins_every_error_class
- no error class of the library is left out of the pins: test_every_error_class_is_pinned
- the same exception raised inside a job gives the pinned exit code through the CLI and the
  pinned outcome in the runs table:                   test_cli_and_run_record_agree_with_the_table
- ... and the pinned action on the invoice job it was raised for:
                                                      test_invoice_worker_agrees_with_the_table
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from synccli import errors, interrupt
from synccli.clock import SimClock
from synccli.connectors.base import RefusedAfterCreate
from synccli.connectors.paging import RepeatedPage
from synccli.connectors.xero import XeroConnector
from synccli.errors import (
    AuthError,
    BadResponse,
    BudgetExhausted,
    ClaimLost,
    ConfigError,
    LeaseBusy,
    LeaseLost,
    ProviderError,
    RateLimited,
    ReauthRequired,
    Rejected,
    SchemaOutdated,
    StoreUnavailable,
    SyncError,
    TransientError,
    UsageError,
)
from synccli.registry import UnknownProvider
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.models import InvoiceAttempt, InvoiceJob, Run
from synccli.sync import context, invoices
from synccli.sync.orders import OrderInputError, add_orders

# exception -> (exit code, run outcome, invoice action): how each site mapped it before the
# mapping was one table (``err.exit_code`` / ``run_exit_code``, ``run_outcome``, ``_Worker.guard``)
PINNED: list[tuple[BaseException, int, str, str]] = [
    (SyncError("x"), 1, "failed", "error"),
    (UsageError("x"), 2, "failed", "error"),
    (ConfigError("x"), 2, "failed", "error"),
    (SchemaOutdated("x"), 2, "failed", "error"),
    (OrderInputError(["x"]), 2, "failed", "error"),
    (UnknownProvider("x"), 2, "failed", "error"),
    (StoreUnavailable("x"), 1, "failed", "error"),
    (LeaseBusy("x"), 4, "busy", "error"),
    (context.AlreadyDone("x"), 4, "busy", "error"),
    (ClaimLost("x"), 1, "failed", "lost"),
    # a job's run whose lease another run took over while it stalled: as a lost claim
    (LeaseLost("x"), 1, "failed", "lost"),
    (ProviderError("x"), 1, "failed", "error"),
    (TransientError("x"), 1, "failed", "transient"),
    (BadResponse("x"), 1, "failed", "transient"),
    (RateLimited("x", retry_after=1.0), 1, "failed", "transient"),
    (RepeatedPage("x"), 1, "failed", "transient"),
    (BudgetExhausted("x"), 3, "budget", "postponed"),
    (AuthError("x"), 5, "auth", "auth"),
    (ReauthRequired("x"), 5, "reauth", "auth"),
    (context.NeverAuthorised("x"), 5, "reauth", "auth"),
    (Rejected("x"), 1, "failed", "rejected"),
    # a refused later step of a write whose record exists (a credit note's allocation): the job
    # is rejected like any refusal; its record is looked up before a retry (test_refunds.py)
    (RefusedAfterCreate("x"), 1, "failed", "rejected"),
    (RuntimeError("x"), 1, "failed", "error"),
    (KeyboardInterrupt(), 130, "interrupted", "error"),
    (interrupt.Interrupted(15), 143, "interrupted", "error"),
]
IDS = [
    type(e).__name__ + ("-15" if isinstance(e, interrupt.Interrupted) else "") for e, *_ in PINNED
]


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


@pytest.mark.parametrize(("exc", "code", "run_outcome", "action"), PINNED, ids=IDS)
def test_table_pins_every_error_class(
    exc: BaseException, code: int, run_outcome: str, action: str
) -> None:
    from synccli.outcomes import outcome_of

    outcome = outcome_of(exc)
    assert (int(outcome.exit_code), outcome.run_outcome, str(outcome.invoice_action)) == (
        code,
        run_outcome,
        action,
    )
    # the run's own mapping (the log line closing it, ``--all``'s worst code) is the table's
    assert (context.run_exit_code(exc), context.run_outcome(exc)) == (code, run_outcome)
    if isinstance(exc, SyncError):
        assert int(exc.exit_code) == code  # what older callers read stays the table's


def test_every_error_class_is_pinned() -> None:
    import synccli

    for module in pkgutil.walk_packages(synccli.__path__, "synccli."):  # every error class
        if not module.name.endswith("__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
    declared = {c for c in _subclasses(SyncError) if c.__module__.startswith("synccli.")}
    declared |= {SyncError}
    pinned = {type(e) for e, *_ in PINNED}
    assert declared - pinned == set(), "pin the outcome of every new error class here"
    assert {c for c in vars(errors).values() if isinstance(c, type)} - pinned - {
        errors.ExitCode,
        errors.IntEnum,
        errors.datetime,
    } == set()


# --- the consumers ------------------------------------------------------------------------------
def _connection(store: Store) -> Any:
    return add_connection(
        store,
        "shop",
        "unleashed",
        {"api_id": "00000000-0000-0000-0000-000000000000"},
        {"api_key": "k"},
        "owner@shop.example",
    )


ORDER = {
    "number": "OUT-1",
    "date": "2026-01-05",
    "currency": "NZD",
    "customer": {"email": "a@b.example", "name": "A B"},
    "lines": [
        {
            "sku": "SKU-1",
            "description": "thing",
            "quantity": 1,
            "unit_price": "10.00",
            "tax_code": "G.S.T.",
            "tax_rate": "0.15",
        }
    ],
    "total": "11.50",
}


def _raiser(exc: BaseException) -> Callable[..., Any]:
    def raise_it(*_a: Any, **_kw: Any) -> Any:
        raise exc

    return raise_it


@pytest.mark.parametrize(("exc", "code", "run_outcome", "action"), PINNED, ids=IDS)
def test_cli_and_run_record_agree_with_the_table(
    store: Store,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    code: int,
    run_outcome: str,
    action: str,
) -> None:
    _connection(store)
    monkeypatch.setattr(invoices, "post_invoices", _raiser(exc))
    result = cli("post-invoices", "-c", "shop")
    assert result.exit_code == code, result.stderr
    with store.session() as s:
        runs = list(s.scalars(select(Run)))
    assert [r.outcome for r in runs] == [run_outcome]
    assert runs[0].ended_at is not None


class _Quiet:
    """A connector that is never asked for anything: the failure comes before any call."""

    capabilities = XeroConnector.capabilities

    def __init__(self) -> None:
        self.http = SimpleNamespace(calls=0, fence=None, write_wait=None)

    def prime(self, name: str, value: Any) -> None:
        pass

    def reference_lists(self) -> dict[str, Any]:
        return {}


# the invoice action as the job's records show it: (the attempt row written, the report's entry,
# whether the run stops with the exception)
SEEN = {
    "lost": (None, "lost", False),
    "rejected": ("rejected", "rejected", False),
    "transient": ("transient", "transient", False),
    "postponed": ("budget", "postponed", True),
    "auth": ("auth", "auth", True),
    "error": ("error", None, True),
}


@pytest.mark.parametrize(("exc", "code", "run_outcome", "action"), PINNED, ids=IDS)
def test_invoice_worker_agrees_with_the_table(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    code: int,
    run_outcome: str,
    action: str,
) -> None:
    conn = _connection(store)
    clock = SimClock(datetime(2026, 1, 6, 9, 0, tzinfo=UTC))
    add_orders(store, conn, json.dumps(ORDER), clock.now())
    monkeypatch.setattr(invoices, "ensure_customer", _raiser(exc))
    attempt, entry, stops = SEEN[action]
    raised: BaseException | None = None
    report = None
    try:
        with context.job_run(
            store, invoices.JOB, conn, clock=clock, connector_factory=lambda _ctx: _Quiet()
        ) as ctx:
            report = invoices.post_invoices(ctx)
    except BaseException as err:  # noqa: BLE001 - the test looks at whatever came out
        raised = err
    assert (raised is exc) == stops
    with store.session() as s:
        attempts = [a.outcome for a in s.scalars(select(InvoiceAttempt))]
        run = s.scalar(select(Run))
        job = s.scalar(select(InvoiceJob))
    assert attempts == ([] if attempt is None else [attempt])
    assert run is not None and run.outcome == (run_outcome if stops else "ok")
    assert job is not None and job.state in ("pending", "failed", "gave_up")
    if report is not None:
        assert [i.outcome for i in report.invoices] == ([] if entry is None else [entry])
    elif entry is not None:
        counts = run.counts or {}
        assert [i["outcome"] for i in counts.get("invoices", [])] == [entry]
