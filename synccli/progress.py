"""How a job and the HTTP layer tell whoever is watching how far a long run has got.

The job layer and the connectors know nothing of terminals: they report to a
:class:`ProgressObserver`, which does nothing by default. The CLI passes one that draws a progress
line when stderr is a terminal (``synccli/cli/progress.py``).

Calls come from the thread that reads the pages (a pull reads ahead on a worker thread), so an
observer must be safe to call from any thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class ProgressObserver:
    """Does nothing; the CLI overrides what it shows."""

    def listing(self, name: str) -> None:
        """A listing (``products``, ``stock``) starts being read: nothing of it is read yet."""

    def read(self, records: int, total: int | None) -> None:
        """``records`` more were read; ``total`` is how many the listing holds when the provider
        says so (None: it does not)."""

    def restarted(self) -> None:
        """The listing is read again from its start (it changed while it was paged)."""

    def waiting(self, seconds: float) -> None:
        """The next call waits ``seconds`` for the provider's rate limit."""

    def waited(self) -> None:
        """The rate-limit wait is over."""


QUIET = ProgressObserver()


def observed_pages(observer: ProgressObserver, name: str, pages: Iterator[Any]) -> Iterator[Any]:
    """``pages`` (a connector's ``Page`` iterator) as they are, each reported when it is read."""
    observer.listing(name)
    for page in pages:
        if page.relisted:
            observer.restarted()
        observer.read(len(page.records), page.total)
        yield page
