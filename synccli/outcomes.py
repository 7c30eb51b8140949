"""What an exception means, in one table: the process's exit code, the outcome its run row records,
and what the invoice worker does with the job it was raised for.

The HTTP layer classifies a provider's answer once (:mod:`synccli.errors`); every consumer (the CLI,
``job_run``'s run row and log line, the invoice worker) reads the outcome of that class here, so a
new error class is one row, and the three can never disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from synccli.errors import (
    AuthError,
    BudgetExhausted,
    ClaimLost,
    ExitCode,
    LeaseBusy,
    ReauthRequired,
    Rejected,
    TransientError,
    UsageError,
)


class InvoiceAction(StrEnum):
    """What the invoice worker does with the job an exception was raised for."""

    LOST = "lost"  # the claim is gone: write and send nothing more, the new holder has it
    REJECTED = "rejected"  # count a rejection, email the merchant, retry on the slow schedule
    TRANSIENT = "transient"  # free the job, due again at once; no attempt counted
    POSTPONED = "postponed"  # free the job until the budget resets, then stop the run
    AUTH = "auth"  # free the job, flag the connection (one email), then stop the run
    ERROR = "error"  # a bug or an outage: free the job, record it, then stop the run


@dataclass(frozen=True)
class Outcome:
    exit_code: int  # the process's (``--all``: the most actionable one wins, see cli.jobs)
    run_outcome: str  # the run row's ``outcome``
    invoice_action: InvoiceAction

    @property
    def stops_run(self) -> bool:
        """Whether the invoice worker re-raises after recording the job (the run ends)."""
        return self.invoice_action in (
            InvoiceAction.POSTPONED,
            InvoiceAction.AUTH,
            InvoiceAction.ERROR,
        )


_FAILED = Outcome(int(ExitCode.FAILURE), "failed", InvoiceAction.ERROR)

# First match wins: a subclass comes before its base (ReauthRequired before AuthError). Classes
# not named here (SyncError, StoreUnavailable, ProviderError, a bug's RuntimeError) are _FAILED.
TABLE: tuple[tuple[type[BaseException], Outcome], ...] = (
    (KeyboardInterrupt, Outcome(130, "interrupted", InvoiceAction.ERROR)),
    (ClaimLost, Outcome(int(ExitCode.FAILURE), "failed", InvoiceAction.LOST)),
    (UsageError, Outcome(int(ExitCode.USAGE), "failed", InvoiceAction.ERROR)),
    (LeaseBusy, Outcome(int(ExitCode.BUSY), "busy", InvoiceAction.ERROR)),
    (BudgetExhausted, Outcome(int(ExitCode.BUDGET), "budget", InvoiceAction.POSTPONED)),
    (ReauthRequired, Outcome(int(ExitCode.REAUTH), "reauth", InvoiceAction.AUTH)),
    (AuthError, Outcome(int(ExitCode.REAUTH), "auth", InvoiceAction.AUTH)),
    (Rejected, Outcome(int(ExitCode.FAILURE), "failed", InvoiceAction.REJECTED)),
    (TransientError, Outcome(int(ExitCode.FAILURE), "failed", InvoiceAction.TRANSIENT)),
)


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of ``exc``, whatever raised it."""
    for cls, outcome in TABLE:
        if isinstance(exc, cls):
            if isinstance(exc, KeyboardInterrupt):
                # a signal's own code (128 + its number: SIGTERM is 143), else Ctrl-C's 130
                code = getattr(exc, "exit_code", outcome.exit_code)
                return replace(outcome, exit_code=int(code))
            return outcome
    return _FAILED
