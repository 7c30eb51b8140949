"""One exception hierarchy for the library. What each class means for the process's exit code, the
run's record and an invoice job is one table: :mod:`synccli.outcomes`."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: every class this module holds is an error class or pinned
    # as not one (tests/test_outcomes.py), and typing.Any is a class
    from typing import Any


class ExitCode(IntEnum):
    """Stable process exit codes (documented in README.md)."""

    OK = 0
    FAILURE = 1  # operational failure: the provider or the network let us down
    USAGE = 2  # bad input, bad configuration, unknown name, out-of-date schema
    BUDGET = 3  # the provider's API budget for the day/month is exhausted
    BUSY = 4  # another run holds the lease for this job and connection
    REAUTH = 5  # the connection needs re-authorisation by the merchant
    UNNOTIFIED = 6  # the merchant could not be emailed (no notify_email, SMTP failing)


class SyncError(Exception):
    """Base of every expected error. ``str(err)`` is the one line a user sees."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def exit_code(self) -> int:
        """The process's exit code for this error, read from the one table of outcomes."""
        from synccli.outcomes import outcome_of  # that module imports this one

        return outcome_of(self).exit_code


class UsageError(SyncError):
    """Bad input or an unknown name given by the user."""


class ConfigError(UsageError):
    """Bad configuration (environment, .env, data directory)."""


class SchemaOutdated(UsageError):
    """The store's schema is behind the code."""


class StoreUnavailable(SyncError):
    """The store failed under us: its server is gone, its disk is full, a lock was held by
    another process for longer than the lock timeout. Nothing is wrong with the command: a later
    run may succeed (exit 1, one line naming the cause)."""


class LeaseBusy(SyncError):
    """Another run holds the lease for this job and connection."""


class ClaimLost(SyncError):
    """This process no longer holds the claim it worked under (it expired while the process was
    stalled, and another run took the work over, or an operator cancelled it): stop, send nothing
    more, and leave the work to its new holder."""

    def __init__(self, message: str, *, lost: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.lost = lost  # ids of the claims found lost (empty: not known which)


class LeaseLost(ClaimLost):
    """This run no longer holds its job's lease: it ran out while the process was stalled and
    another run of the job took it over. What the run read before the stall may be older than
    what that run stored since, so it writes nothing more (its transaction that found the lease
    gone is rolled back) and leaves the job to the new holder; its outcome is a lost claim's."""


class ProviderError(SyncError):
    """Any failure talking to a provider. ``retryable`` says whether a later run may succeed."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.body = body


class TransientError(ProviderError):
    """Timeout, connection reset, 5xx, maintenance: try again later."""

    retryable = True


class BadResponse(TransientError):
    """The provider answered something we cannot read (HTML page, truncated JSON, wrong shape)."""


class RateLimited(TransientError):
    """A short-window limit (minute, bucket, burst): wait ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class BudgetExhausted(ProviderError):
    """The day's or month's allowance is spent: stop cleanly and resume after ``reset_at``."""

    def __init__(self, message: str, *, reset_at: datetime | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reset_at = reset_at


class AuthError(ProviderError):
    """Credentials rejected; the HTTP layer refreshes once before raising this."""


class ReauthRequired(AuthError):
    """The refresh token is dead: the merchant must authorise the connection again."""


class Rejected(ProviderError):
    """The provider refused the request as invalid (validation error). Retrying as-is will fail."""

    def __init__(self, message: str, *, errors: list[str] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.errors = errors or [message]
