"""How a listing is walked, for every connector: paginators say what to ask for next, and one
generator, :func:`read_pages`, does the walking.

A paginator is pure bookkeeping over the provider's answers: its first request, and from each
answer the request that follows it (None at the end). Requests are plain hashable values (a page
number, an offset, a link, a version) that the connector's ``fetch`` turns into a call:

- :class:`PageNumbers`: page 1, 2, ... while the answer's page count says more follow
  (Unleashed's ``Pagination.NumberOfPages`` via :func:`number_of_pages`; Xero's
  ``pagination.pageCount`` via :func:`xero_pages`, which without that block goes on while a page
  is full and stops at a short one);
- :class:`OffsetCount`: offsets, where each answer states the rows counted and the offset it
  answers (Lightspeed R-Series' older ``@attributes`` ``count``/``offset`` form);
- :class:`NextLink`: the answer's next link, verbatim (Lightspeed R-Series ``@attributes.next``),
  falling back to another paginator on an answer without one;
- :class:`VersionCursor`: ``after`` = the answer's ``version.max`` until a page comes back empty
  (Lightspeed X-Series API 2.0).

:func:`read_pages` owns what every walk shares, so no connector writes it again:

- row-error capture: a row that cannot be read (its reader raises one of :data:`ROW_ERRORS`)
  becomes a line in ``Page.errors``; the other rows of the page still apply;
- the page's cursor: the newest stamp of its rows (a row that failed to read still counts when
  its stamp can be read, so the cursor moves past it);
- loop detection: a walk that is sent back to a request it already made (the same link, page,
  offset or version twice) raises :class:`RepeatedPage` instead of reading it again for ever.

What a page says comes next is judged after that page is handed out: its rows are good even when
the answer's way on is not, and the error follows the page (as it always did for Lightspeed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from synccli.connectors.base import Page
from synccli.errors import BadResponse, ProviderError

T = TypeVar("T")
Req = TypeVar("Req", bound=Hashable)

# What a row reader may raise for a row it cannot read: the row becomes a Page.errors line. A
# malformed decimal raises decimal.InvalidOperation, an ArithmeticError.
ROW_ERRORS: tuple[type[Exception], ...] = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    ArithmeticError,
)


class RepeatedPage(BadResponse):
    """The provider sent the walk back to a page it had already read (the same link, page,
    offset or version). Following it would read the same rows for ever; the walk stops here.
    Transient: the next run reads the listing again."""


# ------------------------------------------------------------------------------------------------
# paginators


class Paginator(ABC, Generic[Req]):
    """What to ask for first, and what next after each answer."""

    @abstractmethod
    def first(self) -> Req:
        """The first request of the walk."""

    @abstractmethod
    def following(self, asked: Req, body: Any, rows: int) -> Req | None:
        """The request after the answer ``body`` (holding ``rows`` rows) to ``asked``; None
        when that answer was the last page. May raise ``BadResponse`` when the answer cannot
        be followed."""

    def total(self, body: Any) -> int | None:
        """How many records the whole listing holds when the answer says so (for a progress
        line only, never to decide where the listing ends)."""
        return None

    def describe(self, request: Req) -> str:
        """The request in an error message."""
        return repr(request)


def _int(value: Any) -> int | None:
    """A count from an answer: an int or its text, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


@dataclass
class PageNumbers(Paginator[int]):
    """Page 1, 2, ... ``pages`` reads the page count the answer states (None when it states
    none). Without a count, a page holding at least ``full`` rows may have a successor (one more
    call at worst answers an empty page); with ``full`` None such an answer is the last page."""

    pages: Callable[[Any], int | None]
    full: int | None = None
    items: Callable[[Any], int | None] = lambda body: None

    def first(self) -> int:
        return 1

    def following(self, asked: int, body: Any, rows: int) -> int | None:
        count = self.pages(body)
        if count is not None:
            return asked + 1 if asked < count else None
        full = self.full is not None and rows >= self.full
        return asked + 1 if full else None

    def total(self, body: Any) -> int | None:
        return self.items(body)

    def describe(self, request: int) -> str:
        return f"page {request}"


def _block(body: Any, name: str) -> dict[str, Any]:
    block = body.get(name) if isinstance(body, dict) else None
    return block if isinstance(block, dict) else {}


def number_of_pages() -> PageNumbers:
    """Unleashed: ``Pagination.NumberOfPages`` (0 for an empty result) and ``NumberOfItems``."""

    def count(body: Any, name: str) -> int:
        value = _int(_block(body, "Pagination").get(name) or 0)
        if value is None:
            # an unreadable count would end the listing early without a word
            raise BadResponse(f"Pagination.{name} is not a number")
        return value

    def pages(body: Any) -> int:
        return count(body, "NumberOfPages")

    def items(body: Any) -> int | None:
        return count(body, "NumberOfItems") or None

    return PageNumbers(pages, items=items)


def xero_pages(full: int) -> PageNumbers:
    """Xero: ``pagination.pageCount`` when the answer has that block (a page may hold fewer rows
    than asked for while more follow); without it only a page shorter than ``full`` (the rows
    Xero puts on a page when it reads no pageSize) ends the listing. ``itemCount`` is the
    total."""

    def pages(body: Any) -> int | None:
        count = _block(body, "pagination").get("pageCount")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def items(body: Any) -> int | None:
        count = _block(body, "pagination").get("itemCount")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    return PageNumbers(pages, full=full, items=items)


@dataclass
class OffsetCount(Paginator[int]):
    """Offsets into a listing whose answers state how many rows it holds and which offset they
    answer (``attributes(body)`` gives ``count`` and ``offset``; Lightspeed's older form). An
    answer that does not go where it was asked (another offset, or an empty page while more
    rows are counted) would loop or stop short, so it raises ``BadResponse`` instead."""

    what: str  # the listing, in error messages
    attributes: Callable[[Any], Any]

    def first(self) -> int:
        return 0

    def following(self, asked: int, body: Any, rows: int) -> int | None:
        attributes = self.attributes(body)
        if not isinstance(attributes, dict) or "count" not in attributes:
            return None
        count = _int(attributes.get("count"))
        offset = _int(attributes.get("offset") or 0)
        if count is None or offset is None:
            raise BadResponse(f"GET {self.what}: unreadable count/offset in @attributes")
        if offset != asked:
            raise BadResponse(
                f"GET {self.what}: asked for offset {asked}, answered offset {offset} without "
                "a next link; the listing cannot be read past its first page"
            )
        if offset + rows >= count:
            return None
        if rows == 0:
            raise BadResponse(
                f"GET {self.what}: an empty page at offset {offset} of {count} rows without a "
                "next link; the listing cannot be read to its end"
            )
        return offset + rows

    def total(self, body: Any) -> int | None:
        attributes = self.attributes(body)
        count = _int(attributes.get("count")) if isinstance(attributes, dict) else None
        return count if count is not None and count > 0 else None

    def describe(self, request: int) -> str:
        return f"offset {request}"


@dataclass
class NextLink(Paginator[str | int]):
    """The answer's next link, followed verbatim (``link(body)``; an empty one ends the walk).
    ``check`` vets a link before it is followed (e.g. that it stays on our own host: the bearer
    token goes with it). An answer without a link goes on by ``fallback``, whose requests are
    ints; the first request is the fallback's (0 when there is none): the connector's own
    first URL."""

    link: Callable[[Any], str | None]
    check: Callable[[str], None] = lambda url: None
    fallback: Paginator[int] | None = None
    _asked: int = field(default=0, init=False)  # the last request the fallback made

    def first(self) -> int:
        self._asked = self.fallback.first() if self.fallback else 0
        return self._asked

    def following(self, asked: str | int, body: Any, rows: int) -> str | int | None:
        if isinstance(asked, int):
            self._asked = asked
        nxt = self.link(body)
        if nxt:
            self.check(nxt)
            return nxt
        if self.fallback is None:
            return None
        return self.fallback.following(self._asked, body, rows)

    def total(self, body: Any) -> int | None:
        return self.fallback.total(body) if self.fallback else None

    def describe(self, request: str | int) -> str:
        if isinstance(request, str):
            return f"next link {request}"
        return self.fallback.describe(request) if self.fallback else repr(request)


@dataclass
class VersionCursor(Paginator[int]):
    """Lightspeed X-Series API 2.0: ask ``after=`` the answer's ``version.max`` until a page
    comes back empty. Versions only grow: an answer whose ``version.max`` is not past the
    ``after`` asked would read the same rows again, and one with rows but no ``version.max``
    cannot be followed; both raise instead."""

    what: str
    after: int = 0  # where the walk starts (a stored version, or 0 for everything)

    def first(self) -> int:
        return self.after

    def following(self, asked: int, body: Any, rows: int) -> int | None:
        if rows == 0:
            return None
        newest = _int(_block(body, "version").get("max"))
        if newest is None:
            raise BadResponse(f"GET {self.what}: a page of {rows} rows without version.max")
        if newest <= asked:
            raise RepeatedPage(
                f"GET {self.what}: asked after version {asked}, answered version.max {newest}: "
                "the listing does not move on"
            )
        return newest

    def describe(self, request: int) -> str:
        return f"after={request}"


def version_max(body: Any) -> int | None:
    """An X-Series answer's ``version.max`` (the version a stored cursor may advance to)."""
    return _int(_block(body, "version").get("max"))


# ------------------------------------------------------------------------------------------------
# the walk


@dataclass
class Sheet(Generic[T, Req]):
    """One page of a walk with what it came from: the request, the parsed answer and its raw
    rows (for callers that judge the listing as a whole), and whether the paginator found no
    page after it."""

    page: Page[T]
    asked: Req
    body: Any
    rows: list[Any]
    last: bool


def _default_line(row: Any, exc: Exception) -> str:
    return f"{str(row)[:60]!r}: {exc}"


def read_pages(
    paginator: Paginator[Req],
    fetch: Callable[[Req], Any],
    rows: Callable[[Any], list[Any]],
    read: Callable[[Any], T],
    *,
    what: str,
    error_line: Callable[[Any, Exception], str] = _default_line,
    stamp: Callable[[Any, T | None], datetime | None] | None = None,
    number: int = 0,
) -> Iterator[Sheet[T, Req]]:
    """Walk a listing page by page.

    ``fetch(request)`` makes the call and returns the parsed answer; ``rows(body)`` its rows
    (raising ``BadResponse`` for an answer that is no listing); ``read(row)`` one record, or one of
    :data:`ROW_ERRORS`, which ``error_line(row, exc)`` turns into the page's error line.
    ``stamp(row, record)`` (record None when the row failed to read) gives the row's time: the
    page's cursor is the newest; without ``stamp`` the page has no cursor. Pages are numbered
    from ``number + 1``. See the module docstring for loop detection.
    """
    asked: Req | None = paginator.first()
    seen: set[Hashable] = set()
    while asked is not None:
        seen.add(asked)
        body = fetch(asked)
        raw = rows(body)
        records: list[T] = []
        errors: list[str] = []
        newest: datetime | None = None
        for row in raw:
            record: T | None = None
            try:
                record = read(row)
                records.append(record)
            except ROW_ERRORS as exc:
                errors.append(error_line(row, exc))
            when = stamp(row, record) if stamp is not None else None
            if when is not None and (newest is None or when > newest):
                newest = when
        number += 1
        page = Page(
            records,
            cursor=newest,
            number=number,
            errors=errors,
            total=paginator.total(body),
        )
        following: Req | None = None
        problem: ProviderError | None = None
        try:
            following = paginator.following(asked, body, len(raw))
            if following is not None and following in seen:
                raise RepeatedPage(
                    f"GET {what}: the answer to {paginator.describe(asked)} sends the listing "
                    f"back to {paginator.describe(following)}, already read; stopped rather "
                    "than read it again"
                )
        except ProviderError as exc:
            problem = exc  # raised once this page, whose rows are good, is handed out
        yield Sheet(page, asked, body, raw, last=following is None and problem is None)
        if problem is not None:
            raise problem
        asked = following


def pages(
    paginator: Paginator[Req],
    fetch: Callable[[Req], Any],
    rows: Callable[[Any], list[Any]],
    read: Callable[[Any], T],
    **kw: Any,
) -> Iterator[Page[T]]:
    """:func:`read_pages`, the pages alone."""
    for sheet in read_pages(paginator, fetch, rows, read, **kw):
        yield sheet.page


def every_record(walk: Iterable[Page[T]], what: str) -> list[T]:
    """Every record of a look-up's pages. A row that cannot be read fails the look-up: it must
    not pass for one the provider does not have (a product taken for gone, a customer or an
    invoice created a second time, a stock row read as none)."""
    out: list[T] = []
    for page in walk:
        if page.errors:
            raise BadResponse(
                f"{what}: {len(page.errors)} unreadable record(s): {page.errors[0][:200]}"
            )
        out.extend(page.records)
    return out


class ShortPageCursor(VersionCursor):
    """:class:`VersionCursor` that also stops at a page shorter than asked: rows come in
    version order, so a short page is the end, and the empty call after it is saved (one call
    a run instead of two [X-Series notes §15]). Should a provider clamp the page size below
    ours, the read only ends early; the cursor stands at the last row read."""

    def __init__(self, what: str, after: int, size: int) -> None:
        super().__init__(what, after)
        self.size = size

    def following(self, asked: int, body: Any, rows: int) -> int | None:
        if rows < self.size:
            return None  # taxes' list carries no version at all [SPEC TaxCollection]
        return super().following(asked, body, rows)


def convert_rows(
    rows: list[Any], convert: Callable[[dict[str, Any]], T]
) -> tuple[list[T], list[str]]:
    """The rows read by ``convert``, and a line for each one it could not read."""
    records: list[T] = []
    errors: list[str] = []
    for row in rows:
        if not isinstance(row, dict):
            errors.append(f"unreadable row {str(row)[:60]!r}")
            continue
        try:
            records.append(convert(row))
        except ROW_ERRORS as exc:
            errors.append(f"{row.get('id')}: {exc}")
    return records, errors
