"""The conformance corpus: every fixture under ``tests/conformance/<provider>/`` served on loopback
to the real connector, and the parsed result (or the error) asserted. What a fixture holds and how
it is compared: ``conformance_harness``. Where each one comes from: ``<provider>/SOURCES.md``."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conformance_harness import (
    PROVIDERS,
    Fixture,
    FixtureServer,
    arguments,
    connector_for,
    differences,
    load_all,
    plain,
    source_keys,
)

from synccli import errors

ALL = [f for p in PROVIDERS for f in load_all(p)]
MINIMUM = 25  # issue 17, line 19: at least this many fixtures per provider


def _param(f: Fixture) -> Any:
    marks = []
    if f.data.get("xfail"):
        marks.append(pytest.mark.xfail(reason=f.data["xfail"], strict=True))
    return pytest.param(f, id=f"{f.provider}/{f.name}", marks=marks)


def _run(f: Fixture) -> tuple[Any, BaseException | None, FixtureServer]:
    call = f.data["call"]
    with FixtureServer(f.data["exchanges"], f.provider) as server:
        conn = connector_for(f.provider, server.url, f.data.get("settings") or {})
        method = getattr(conn, call["method"])
        args = arguments(call["method"], call.get("args") or {})
        try:
            result = method(**args) if isinstance(args, dict) else method(*args)
            return plain(result), None, server
        except errors.SyncError as err:
            return None, err, server


def problems_of(fixture: Fixture) -> list[str]:
    """Everything the connector did that the fixture does not say: requests, result, error."""
    result, error, server = _run(fixture)
    expect = fixture.data["expect"]
    problems = list(server.failures)
    if len(server.seen) < len(fixture.data["exchanges"]):
        problems.append(
            f"{len(server.seen)} request(s) made, the fixture expects "
            f"{len(fixture.data['exchanges'])}"
        )
    if "error" in expect:
        want = expect["error"]
        if error is None:
            problems.append(f"no error raised; the result was {result!r}")
        else:
            if type(error).__name__ != want["class"]:
                problems.append(f"raised {type(error).__name__}: {error}, expected {want['class']}")
            for part in want.get("message_contains", []):
                if part not in str(error):
                    problems.append(f"error message {str(error)!r} lacks {part!r}")
            if "messages" in want:
                got = list(getattr(error, "errors", None) or [])
                problems += differences(want["messages"], got, "error.errors")
            for attr in ("status", "retry_after"):
                if attr in want and getattr(error, attr, None) != want[attr]:
                    problems.append(f"error.{attr} {getattr(error, attr, None)!r}")
    elif error is not None:
        problems.append(f"raised {type(error).__name__}: {error}")
    else:
        problems += differences(expect["result"], result)
    return problems


@pytest.mark.parametrize("fixture", [_param(f) for f in ALL])
def test_fixture(fixture: Fixture) -> None:
    problems = problems_of(fixture)
    assert not problems, "\n".join(problems)


def _changed(name: str, change: Any) -> Fixture:
    """A copy of fixture ``provider/name`` after ``change`` edits its data."""
    provider, stem = name.split("/")
    original = next(f for f in ALL if f.provider == provider and f.name == stem)
    data = copy.deepcopy(original.data)
    change(data)
    return Fixture(provider, stem, original.path, data)


def test_the_harness_reports_a_result_other_than_the_fixture_says() -> None:
    def dearer(data: dict[str, Any]) -> None:
        data["expect"]["result"]["price"] = "5000.01"

    assert problems_of(_changed("xero/items_find_by_code", dearer)) == [
        "result.price: Decimal('5000.0'), expected '5000.01'"
    ]


def test_the_harness_reports_a_request_other_than_the_fixture_says() -> None:
    def other_code(data: dict[str, Any]) -> None:
        data["exchanges"][0]["request"]["query"]["where"] = 'Code=="124"'

    assert problems_of(_changed("xero/items_find_by_code", other_code)) == [
        "request 1: query where='Code==\"123\"', expected 'Code==\"124\"'"
    ]


def test_the_harness_reports_a_call_the_fixture_does_not_expect() -> None:
    def no_stock_call(data: dict[str, Any]) -> None:
        del data["exchanges"][1]

    problems = problems_of(_changed("unleashed/products_find_with_stock_row", no_stock_call))
    assert problems[0].startswith("request 2 was not expected: GET /StockOnHand?productId=")


def test_the_harness_checks_the_unleashed_signature() -> None:
    fixture = next(f for f in ALL if f.name == "sales_orders_find_none")
    with FixtureServer(fixture.data["exchanges"], "unleashed", key="another-key") as server:
        connector_for("unleashed", server.url, {}).find_invoice("44112233")
    assert server.failures == [
        "request 1: api-auth-signature does not sign the query 'orderNumber=44112233'"
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_fixture_names_a_source_listed_beside_it(provider: str) -> None:
    fixtures = load_all(provider)
    keys = source_keys(provider)
    for f in fixtures:
        assert f.source in keys, f"{f.path.name}: source {f.source!r} is not in SOURCES.md"
        assert f.data.get("description"), f"{f.path.name}: no description"
    assert len(fixtures) >= MINIMUM, f"{provider}: {len(fixtures)} fixtures, need {MINIMUM}"
