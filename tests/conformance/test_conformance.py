"""The conformance corpus: every fixture under ``tests/conformance/<provider>/`` served on loopback
to the real connector, and the parsed result (or the error) asserted. What a fixture holds and how
it is compared: ``conformance_harness``. Where each one comes from: ``<provider>/SOURCES.md``."""

from __future__ import annotations

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


@pytest.mark.parametrize("fixture", [_param(f) for f in ALL])
def test_fixture(fixture: Fixture) -> None:
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
    else:
        if error is not None:
            problems.append(f"raised {type(error).__name__}: {error}")
        else:
            problems += differences(expect["result"], result)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_fixture_names_a_source_listed_beside_it(provider: str) -> None:
    fixtures = load_all(provider)
    keys = source_keys(provider)
    for f in fixtures:
        assert f.source in keys, f"{f.path.name}: source {f.source!r} is not in SOURCES.md"
        assert f.data.get("description"), f"{f.path.name}: no description"
    assert len(fixtures) >= MINIMUM, f"{provider}: {len(fixtures)} fixtures, need {MINIMUM}"
