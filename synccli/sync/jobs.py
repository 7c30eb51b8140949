"""The jobs synccli runs, by the names their runs, leases, logs and status are recorded under.

A name is written in one place, here: the CLI registers its commands under these names, a run
row and a lease are keyed by them, and ``status``, ``trace``, ``plan`` and the demo read them
back. A job that reuses another's code (the stream runner, say) still runs, and renews its
lease, under its own name (see ``JobContext.heartbeat``).
"""

from __future__ import annotations

from enum import StrEnum


class Job(StrEnum):
    """A job's name. A ``str``: it goes into the store, the logs and JSON as it is."""

    PULL_PRODUCTS = "pull-products"
    SWEEP_OLDEST = "sweep-oldest"
    SYNC_PRODUCT = "sync-product"
    LINK_CUSTOMERS = "link-customers"
    POST_INVOICES = "post-invoices"


# The jobs a schedule runs (crontab.example, ``plan``, the demo), in the order a round runs them:
# products first so that invoices find them linked, customers before the invoices that need them.
SCHEDULED: tuple[Job, ...] = (
    Job.PULL_PRODUCTS,
    Job.SWEEP_OLDEST,
    Job.LINK_CUSTOMERS,
    Job.POST_INVOICES,
)
