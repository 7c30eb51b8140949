"""The paginators and the one page generator (synccli.connectors.paging), over answers held in
memory: each test's ``fetch`` is a dict from request to answer, and records what was asked."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from synccli.connectors.base import Page
from synccli.connectors.paging import (
    NextLink,
    OffsetCount,
    RepeatedPage,
    VersionCursor,
    every_record,
    number_of_pages,
    pages,
    read_pages,
    version_max,
    xero_pages,
)
from synccli.errors import BadResponse, TransientError


class Answers:
    """A provider that answers each request from a table, and remembers what it was asked."""

    def __init__(self, answers: dict[Any, Any]) -> None:
        self.answers = answers
        self.asked: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.asked.append(request)
        if len(self.asked) > 20:
            raise AssertionError(f"the walk did not stop: {self.asked[:6]}...")
        return self.answers[request]


def rows_of(key: str):
    return lambda body: body[key]


def ident(row: Any) -> Any:
    return row


# --- next link -----------------------------------------------------------------------------------


def lightspeed(rows: list[Any], nxt: str = "", **attributes: Any) -> dict[str, Any]:
    return {"@attributes": {"next": nxt, **attributes}, "Item": rows}


def next_link(**kw: Any) -> NextLink:
    attrs = lambda body: body.get("@attributes")  # noqa: E731
    return NextLink(
        link=lambda body: (attrs(body) or {}).get("next") or None,
        fallback=OffsetCount("Item.json", attrs),
        **kw,
    )


def test_next_link_is_followed_verbatim_to_the_end() -> None:
    fetch = Answers(
        {
            0: lightspeed([1, 2], "https://h/Item.json?after=a%2B1"),
            "https://h/Item.json?after=a%2B1": lightspeed([3], "https://h/Item.json?after=b"),
            "https://h/Item.json?after=b": lightspeed([]),
        }
    )
    got = list(pages(next_link(), fetch, rows_of("Item"), ident, what="Item.json"))
    assert [p.records for p in got] == [[1, 2], [3], []]
    assert [p.number for p in got] == [1, 2, 3]
    assert fetch.asked[1] == "https://h/Item.json?after=a%2B1"


def test_a_repeated_next_link_is_an_error_naming_the_link_not_a_loop() -> None:
    link = "https://h/Item.json?after=same"
    fetch = Answers({0: lightspeed([1], link), link: lightspeed([2], link)})
    walk = pages(next_link(), fetch, rows_of("Item"), ident, what="Item.json")
    assert next(walk).records == [1]
    assert next(walk).records == [2]  # the page itself is good: handed out, then the error
    with pytest.raises(RepeatedPage, match=r"after=same.*already read"):
        next(walk)
    assert fetch.asked == [0, link]
    assert issubclass(RepeatedPage, TransientError)


def test_a_next_link_refused_by_the_check_raises_after_its_page() -> None:
    def check(url: str) -> None:
        if not url.startswith("https://h/"):
            raise BadResponse("another host")

    fetch = Answers({0: lightspeed([1], "https://evil/Item.json")})
    walk = pages(next_link(check=check), fetch, rows_of("Item"), ident, what="Item.json")
    assert next(walk).records == [1]
    with pytest.raises(BadResponse, match="another host"):
        next(walk)


# --- offset with a count (Lightspeed's older form) -----------------------------------------------


def test_offset_pages_follow_the_count_and_say_the_total() -> None:
    fetch = Answers(
        {
            0: lightspeed([1, 2], count="5", offset="0", limit="2"),
            2: lightspeed([3, 4], count="5", offset="2", limit="2"),
            4: lightspeed([5], count="5", offset="4", limit="2"),
        }
    )
    got = list(pages(next_link(), fetch, rows_of("Item"), ident, what="Item.json"))
    assert [p.records for p in got] == [[1, 2], [3, 4], [5]]
    assert {p.total for p in got} == {5}


def test_an_answer_that_ignores_the_offset_fails_loudly() -> None:
    fetch = Answers(
        {
            0: lightspeed([1, 2], count="5", offset="0"),
            2: lightspeed([1, 2], count="5", offset="0"),
        }
    )
    walk = pages(next_link(), fetch, rows_of("Item"), ident, what="Item.json")
    next(walk)
    next(walk)
    with pytest.raises(BadResponse, match="asked for offset 2, answered offset 0"):
        next(walk)


def test_an_empty_page_short_of_the_count_fails_loudly() -> None:
    fetch = Answers({0: lightspeed([], count="5", offset="0")})
    with pytest.raises(BadResponse, match="empty page"):
        list(pages(next_link(), fetch, rows_of("Item"), ident, what="Item.json"))


# --- page numbers ---------------------------------------------------------------------------------


def unleashed(rows: list[Any], pages_: int, items: int) -> dict[str, Any]:
    return {"Items": rows, "Pagination": {"NumberOfPages": pages_, "NumberOfItems": items}}


def test_number_of_pages_reads_to_the_count() -> None:
    fetch = Answers({1: unleashed([1, 2], 2, 3), 2: unleashed([3], 2, 3)})
    got = list(pages(number_of_pages(), fetch, rows_of("Items"), ident, what="/Products"))
    assert [p.records for p in got] == [[1, 2], [3]]
    assert [p.total for p in got] == [3, 3]


def test_number_of_pages_zero_is_one_empty_page() -> None:
    fetch = Answers({1: unleashed([], 0, 0)})
    got = list(pages(number_of_pages(), fetch, rows_of("Items"), ident, what="/Products"))
    assert [p.records for p in got] == [[]] and got[0].total is None


def test_an_unreadable_page_count_is_a_bad_answer_not_the_end() -> None:
    fetch = Answers({1: unleashed([1], "many", 3)})  # type: ignore[arg-type]
    with pytest.raises(BadResponse, match="NumberOfPages"):
        list(pages(number_of_pages(), fetch, rows_of("Items"), ident, what="/Products"))


def xero(rows: list[Any], count: int | None = None, items: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"Contacts": rows}
    if count is not None:
        body["pagination"] = {"pageCount": count, "itemCount": items}
    return body


def test_xero_pages_follow_page_count_even_past_a_short_page() -> None:
    fetch = Answers({1: xero([1], 2, 2), 2: xero([2], 2, 2)})
    got = list(pages(xero_pages(100), fetch, rows_of("Contacts"), ident, what="/Contacts"))
    assert [p.records for p in got] == [[1], [2]] and got[0].total == 2


def test_xero_pages_without_the_block_go_on_while_a_page_is_full() -> None:
    fetch = Answers({1: xero([0] * 3), 2: xero([0] * 3), 3: xero([0])})
    got = list(pages(xero_pages(3), fetch, rows_of("Contacts"), ident, what="/Contacts"))
    assert [len(p.records) for p in got] == [3, 3, 1]
    assert fetch.asked == [1, 2, 3]


# --- version cursor (X-Series) --------------------------------------------------------------------


def xseries(rows: list[Any], low: int | None = None, high: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": rows}
    if high is not None:
        body["version"] = {"min": low, "max": high}
    return body


def test_version_cursor_asks_after_version_max_until_an_empty_page() -> None:
    fetch = Answers(
        {
            100: xseries([{"v": 120}, {"v": 150}], 120, 150),
            150: xseries([{"v": 151}], 151, 151),
            151: xseries([]),
        }
    )
    walk = read_pages(
        VersionCursor("/api/2.0/products", after=100),
        fetch,
        rows_of("data"),
        ident,
        what="/api/2.0/products",
    )
    sheets = list(walk)
    assert [len(s.page.records) for s in sheets] == [2, 1, 0]
    assert fetch.asked == [100, 150, 151]
    assert [version_max(s.body) for s in sheets] == [150, 151, None]
    assert sheets[-1].last and not sheets[0].last


def test_version_cursor_that_does_not_move_on_is_an_error() -> None:
    fetch = Answers({0: xseries([{"v": 5}], 5, 5), 5: xseries([{"v": 5}], 5, 5)})
    walk = pages(VersionCursor("/api/2.0/products"), fetch, rows_of("data"), ident, what="x")
    next(walk)
    next(walk)
    with pytest.raises(RepeatedPage, match="after version 5"):
        next(walk)


def test_version_cursor_rows_without_version_max_cannot_be_followed() -> None:
    fetch = Answers({0: xseries([{"v": 5}])})
    walk = pages(VersionCursor("/api/2.0/products"), fetch, rows_of("data"), ident, what="x")
    next(walk)
    with pytest.raises(BadResponse, match="version.max"):
        next(walk)


# --- the generator: row errors and the cursor ---------------------------------------------------


def stamp_of(row: Any, record: Any) -> datetime | None:
    if isinstance(row, dict) and isinstance(row.get("at"), str):
        return datetime.fromisoformat(row["at"])
    return None


def test_an_unreadable_row_is_a_page_error_and_still_moves_the_cursor() -> None:
    def read(row: Any) -> Decimal:
        return Decimal(row["price"])  # InvalidOperation, KeyError, TypeError

    rows = [
        {"price": "1.50", "at": "2024-01-01T00:00:00+00:00"},
        {"price": "abc", "at": "2024-01-03T00:00:00+00:00"},  # unreadable, but newest
        {"at": "2024-01-02T00:00:00+00:00"},
        "junk",
    ]
    fetch = Answers({1: unleashed(rows, 1, 4)})
    (page,) = pages(
        number_of_pages(),
        fetch,
        rows_of("Items"),
        read,
        what="/Products",
        error_line=lambda row, exc: f"row {str(row)[:20]}: {exc.__class__.__name__}",
        stamp=stamp_of,
        number=4,
    )
    assert page.records == [Decimal("1.50")]
    assert len(page.errors) == 3
    assert page.errors[0].endswith("InvalidOperation")
    assert page.cursor == datetime(2024, 1, 3, tzinfo=UTC)
    assert page.number == 5  # numbered on from the number given


def test_without_a_stamp_a_page_has_no_cursor() -> None:
    fetch = Answers({1: unleashed([{"at": "2024-01-01T00:00:00+00:00"}], 1, 1)})
    (page,) = pages(number_of_pages(), fetch, rows_of("Items"), ident, what="/Products")
    assert page.cursor is None


def test_a_repeated_page_number_is_an_error() -> None:
    class Stuck(OffsetCount):
        def following(self, asked: int, body: Any, rows: int) -> int | None:
            return 0  # always back to the start

    fetch = Answers({0: lightspeed([1])})
    walk = pages(Stuck("Item.json", lambda b: None), fetch, rows_of("Item"), ident, what="I")
    next(walk)
    with pytest.raises(RepeatedPage, match="offset 0"):
        next(walk)


def test_a_look_up_with_an_unreadable_row_fails_rather_than_leave_it_out() -> None:
    assert every_record([Page([1, 2]), Page([3])], "GET /Products") == [1, 2, 3]
    with pytest.raises(BadResponse, match=r"GET /Products: 1 unreadable record\(s\): g-2: no code"):
        every_record([Page([1]), Page([2], errors=["g-2: no code"])], "GET /Products")
