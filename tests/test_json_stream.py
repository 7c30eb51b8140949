"""``--all --json`` prints each connection's object as its run ends, in the same text the whole
array printed at the end had, and keeps no report once printed: memory stays that of one
connection's run however many connections there are."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from synccli.cli import jobs, output


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{"connection": "a", "report": None}],
        [
            {"connection": "ü 🧦", "skipped": None, "report": {"changes": [1, {"x": []}]}},
            {"connection": "b", "error": "tab\there", "report": {"price": Decimal("1.50")}},
            {"connection": "c", "report": {}},
        ],
    ],
)
def test_the_streamed_array_is_the_text_of_the_whole_one(
    items: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    output.print_json(items)
    whole = capsys.readouterr().out
    stream = output.JsonArray()
    for item in items:
        stream.add(item)
    stream.close()
    assert capsys.readouterr().out == whole
    assert json.loads(whole) == json.loads(json.dumps(output.to_plain(items)))


def test_each_connection_is_printed_when_its_run_ends_and_its_report_dropped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed: list[int] = []  # objects printed when each run started

    class State:
        quiet, verbosity = False, 0

        def store(self) -> object:
            return object()

    def run_one(*args: Any) -> jobs.Outcome:
        printed.append(capsys.readouterr().out.count('"connection"'))
        return jobs.Outcome(args[3].name, {"changes": list(range(3))})

    class Ctx:
        class command:
            params: list[Any] = []

    monkeypatch.setattr(jobs, "state", lambda ctx: State())
    conns = [SimpleNamespace(name=f"s{i}") for i in (1, 2, 3)]
    monkeypatch.setattr(jobs, "select_connections", lambda *a, **k: conns)
    monkeypatch.setattr(jobs, "_run_one", run_one)
    monkeypatch.setattr(jobs, "bind", lambda **k: __import__("contextlib").nullcontext())
    outcomes = jobs.run_for_connections(Ctx(), "pull-products", [], True, False, print, None, True)
    assert printed == [0, 1, 1]  # (read and cleared as each run began)
    assert [o.report for o in outcomes] == [None, None, None]
