"""Issue 18: the operator's tool - numbers, times, pipes, status keys, logs, signals, help.

Every test drives the real entry point: the in-process CLI runner (``cli``) or ``python -m
synccli`` in a subprocess where a pipe, a signal or a separate process is the point.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import update

from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Connection, Lease

SYNCCLI = [sys.executable, "-m", "synccli"]
ROOT = Path(__file__).resolve().parents[1]

# An ISO 8601 time in UTC, as every JSON time must be.
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
# A time for people: to the minute.
PEOPLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?!:\d)")
EXPONENT = re.compile(r"\d[eE][+-]?\d")


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_DATA_DIR=str(data), **extra)
    return env


def _order(number: str, *prices: str) -> str:
    lines = [
        {"sku": f"SKU-{i}", "description": f"item {i}", "quantity": 1, "unit_price": p}
        for i, p in enumerate(prices)
    ]
    total = sum((Decimal(p) for p in prices), start=Decimal(0))
    return json.dumps(
        {
            "number": number,
            "date": "2026-05-01",
            "currency": "NZD",
            "customer": {"email": "jane@example.com", "name": "Jane"},
            "lines": lines,
            "total": str(total),
        }
    )


def _json_times(value: object, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string) in a JSON document whose key names a time."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_json_times(v, k))
    elif isinstance(value, list):
        for v in value:
            found.extend(_json_times(v, key))
    elif isinstance(value, str) and (key.endswith("_at") or key in ("at", "order_date")):
        found.append((key, value))
    return found


# --- line 10: plain numbers, one time format per output kind -------------------------------------
def test_money_and_plan_figures_print_as_plain_decimals_in_text_and_json(
    store: Store, cli, tmp_path: Path
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        orders = tmp_path / "o.jsonl"
        orders.write_text(_order("WEB-80", "80.00", "12.50") + "\n")
        assert cli("invoices", "add", str(orders), "-c", "x").exit_code == 0
        listed = cli("invoices", "list", "--json")
        shown = cli("invoices", "show", "WEB-80", "--json")
        text = cli("invoices", "list").stdout + cli("invoices", "show", "WEB-80").stdout
    row = json.loads(listed.stdout)[0]
    assert row["total"] == "92.5"
    detail = json.loads(shown.stdout)
    assert [ln["unit_price"] for ln in detail["lines"]] == ["80", "12.5"]
    assert "92.5 NZD" in text
    assert not EXPONENT.search(listed.stdout + shown.stdout + text), text
    big = ["--products", "50000000", "--customers", "3000000", "--orders-per-day", "500000"]
    plan_text = cli("plan", *big).stdout
    plan_json = cli("plan", *big, "--json").stdout
    assert "calls/month" in plan_text
    assert not EXPONENT.search(plan_text), plan_text
    assert not EXPONENT.search(plan_json)
    assert not re.search(r"\d\.0\b", plan_json), "a whole number printed as a float"


def test_times_are_iso_utc_in_json_and_to_the_minute_for_people(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        running.app.faults.add("500", 1.0, path="/Invoices")
        cli("invoices", "add", "-", "-c", "x", input=_order("WEB-9", "10"))
        cli("post-invoices", "-c", "x")
        documents = [
            cli("status", "--json").stdout,
            cli("invoices", "show", "WEB-9", "--json").stdout,
            cli("invoices", "list", "--json").stdout,
            cli("connections", "show", "x", "--json").stdout,
        ]
        people = (
            cli("status").stdout
            + cli("invoices", "show", "WEB-9").stdout
            + cli("invoices", "list").stdout
        )
    times = [t for doc in documents for t in _json_times(json.loads(doc))]
    assert times
    for key, value in times:
        assert ISO_UTC.match(value), (key, value)
    assert PEOPLE_TIME.search(people)
    assert not re.search(r"\d\d:\d\d:\d\d", people), people
    assert "T" not in " ".join(re.findall(r"\d{4}-\d\d-\d\d\S*", people))


# --- line 11: a closed pipe ends quietly ----------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--products", "5000", "--customers", "3000", "--orders-per-day", "50"],
        ["--help"],
        ["status", "--json"],
        ["invoices", "list"],
        ["pull-products", "-c", "x"],
    ],
    ids=["plan", "help", "status-json", "invoices-list", "pull-products"],
)
@pytest.mark.slow
def test_piping_into_head_ends_quietly(
    store: Store, _isolated_env: Path, tmp_path: Path, args: list[str]
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        subprocess.run(
            [*SYNCCLI, "invoices", "add", "-", "-c", "x"],
            input=_order("WEB-1", "10"),
            env=_env(_isolated_env),
            capture_output=True,
            text=True,
            check=True,
        )
        # `head` that has already read what it wanted: the read end is closed.
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [*SYNCCLI, *args],
                env=_env(_isolated_env),
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == "", done.stderr
    assert done.returncode in (0, 141), done.returncode


@pytest.mark.slow
def test_piping_a_long_listing_into_head_in_a_shell(store: Store, _isolated_env: Path) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        orders = "\n".join(_order(f"WEB-{n}", "10") for n in range(3000))
        env = _env(_isolated_env)
        subprocess.run(
            [*SYNCCLI, "invoices", "add", "-", "-c", "x"],
            input=orders,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        done = subprocess.run(
            ["sh", "-c", f"{' '.join(SYNCCLI)} invoices list | head -n 2; exit $?"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == "", done.stderr
    assert done.returncode == 0


# --- line 12: status keys and messages ------------------------------------------------------------
def _invoice_states() -> set[str]:
    from synccli.sync.invoices import STATES

    assert {"pending", "posting", "posted", "failed", "gave_up", "cancelled"} <= set(STATES)
    return set(STATES)


def test_status_json_has_the_same_keys_for_every_connection(store: Store, cli) -> None:
    with harness.start("xero", products=5) as xero, harness.start("unleashed") as unl:
        harness.add_connection(store, "a", xero)
        harness.add_connection(store, "b", unl)
        assert cli("pull-products", "-c", "a").exit_code == 0
        assert cli("link-customers", "-c", "b").exit_code == 0
        cli("invoices", "add", "-", "-c", "a", input=_order("WEB-1", "10"))
        with store.session() as s:
            s.execute(
                update(Connection)
                .where(Connection.name == "b")
                .values(needs_reauth=True, reauth_reason="refresh token expired")
            )
        data = json.loads(cli("status", "--json").stdout)
    a, b = data
    assert a.keys() == b.keys()
    assert set(a["invoices"]) == _invoice_states() == set(b["invoices"])
    assert a["invoices"]["pending"] == 1 and b["invoices"]["posted"] == 0
    assert a["cursors"].keys() == b["cursors"].keys() == {"products", "stock", "customers"}
    assert a["cursors"]["customers"] is None and b["cursors"]["products"] is None
    assert ISO_UTC.match(a["cursors"]["products"])
    assert b["needs_reauth"] is True and b["reauth_reason"] == "refresh token expired"
    assert a["reauth_reason"] is None
    assert a["last_successful_pull"] is not None and b["last_successful_pull"] is None
    assert "cursor_lag_minutes" not in a


def test_status_names_the_last_successful_pull_and_refuses_an_unknown_connection(
    store: Store, cli
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        harness.add_connection(store, "y", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        text = cli("status").stdout
        unknown = cli("status", "-c", "nosuch")
        unknown_json = cli("status", "-c", "nosuch", "--json")
    assert "cursor lag" not in text
    assert "last successful pull 0 minutes ago" in text
    assert "last successful pull: never" in text
    assert unknown.exit_code == 2 and "nosuch" in unknown.stderr
    assert unknown_json.exit_code == 2 and unknown_json.stdout == ""


# --- line 5: cron never hides a failure -----------------------------------------------------------
def _log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_errors_and_warnings_printed_by_a_run_reach_the_log_file(
    store: Store, cli, tmp_path: Path
) -> None:
    log = tmp_path / "sync.log"
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        bad = json.loads(_order("WEB-7", "10"))
        bad["lines"][0]["tax_code"] = "NOPE"
        assert cli("invoices", "add", "-", "-c", "x", input=json.dumps(bad)).exit_code == 0
        logged = ("--log-format", "json", "--log-file", str(log))
        refused = cli(*logged, "post-invoices", "-c", "x")
        running.app.faults.add("500", 1.0, path="/Items")
        failed = cli("-q", *logged, "pull-products", "-c", "x")
    assert failed.exit_code == 1
    records = _log_records(log)
    warned = [r for r in records if r["level"] == "warning" and "WEB-7" in r["message"]]
    assert warned, (refused.stderr, records)
    assert warned[0]["connection"] == "x" and warned[0]["job"] == "post-invoices"
    errors = [r for r in records if r["level"] == "error"]
    assert errors and "HTTP 500" in errors[-1]["message"], records
    assert errors[-1]["connection"] == "x" and errors[-1]["job"] == "pull-products"


def test_each_run_ends_with_one_record_in_the_log_file(store: Store, cli, tmp_path: Path) -> None:
    log = tmp_path / "sync.log"
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        ok = cli("-q", "--log-format", "json", "--log-file", str(log), "pull-products", "-c", "x")
        running.app.faults.add("500", 1.0, path="/Items")
        bad = cli("-q", "--log-format", "json", "--log-file", str(log), "pull-products", "-c", "x")
    assert (ok.exit_code, bad.exit_code) == (0, 1)
    ends = [r for r in _log_records(log) if "outcome" in r]
    assert len(ends) == 2, _log_records(log)
    first, second = ends
    for end in ends:
        assert end["job"] == "pull-products" and end["connection"] == "x"
        assert isinstance(end["run_id"], int)
        assert isinstance(end["calls"], int) and isinstance(end["counts"], dict)
    assert (first["outcome"], first["exit_code"], first["counts"]["seen"]) == ("ok", 0, 5)
    assert (second["outcome"], second["exit_code"]) == ("failed", 1)
    assert second["run_id"] == first["run_id"] + 1


def test_log_format_json_puts_only_json_lines_on_stderr(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        running.app.faults.add("500", 1.0, path="/Items")
        failed = cli("-v", "--log-format", "json", "pull-products", "-c", "x")
        unknown = cli("--log-format", "json", "status", "-c", "nosuch")
        no_command = cli("--log-format", "json", "nosuch")
        bad_option = cli("pull-products", "--bogus", "--log-format=json")
    for result in (failed, unknown, no_command, bad_option):
        lines = result.stderr.splitlines()
        assert lines
        for line in lines:
            json.loads(line)  # every line is one JSON object
    assert any(json.loads(line)["level"] == "error" for line in failed.stderr.splitlines())
    assert "nosuch" in json.loads(unknown.stderr.splitlines()[-1])["message"]


# --- line 7: skipped connections are visible ------------------------------------------------------
def test_all_names_each_skipped_connection_in_one_line_and_in_json(store: Store, cli) -> None:
    from datetime import UTC, datetime, timedelta

    from synccli.store.models import Lease

    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "a", running)
        busy = harness.add_connection(store, "b", running)
        harness.add_connection(store, "c", running)
        assert cli("pull-products", "-c", "c").exit_code == 0  # c: already done this round
        with store.session() as s:
            s.add(
                Lease(
                    job="pull-products",
                    connection_id=busy.id,
                    owner="cron-host-2:4242",
                    expires_at=datetime.now(UTC) + timedelta(minutes=10),
                )
            )
        text = cli("pull-products", "--all")
        data = json.loads(cli("pull-products", "--all", "--json").stdout)
        quiet = cli("-q", "pull-products", "--all")
    assert text.exit_code == 0, text.stderr
    skipped = [line for line in text.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 2, text.stdout
    assert skipped[0].startswith("b: skipped") and "cron-host-2" in skipped[0]
    assert skipped[1].startswith("c: skipped") and "this round" in skipped[1]
    by_name = {entry["connection"]: entry for entry in data}
    assert "cron-host-2" in by_name["b"]["skipped"]
    assert by_name["a"]["skipped"] is not None  # ran in the first --all of this round
    assert "this round" in by_name["c"]["skipped"]
    assert quiet.stdout == "" and quiet.exit_code == 0


# --- line 8: signals end a run cleanly; a dead holder's lease is taken over ---------------------
def _lease_and_runs(store: Store) -> tuple[list[str], list[tuple[str, object]]]:
    from sqlalchemy import select

    from synccli.store.models import Lease, Run

    with store.session() as s:
        leases = list(s.scalars(select(Lease.owner).where(Lease.job == "pull-products")))
        runs = [(r.outcome, r.ended_at) for r in s.scalars(select(Run).order_by(Run.id))]
    return leases, runs


def _waiting_for_a_cpu(pid: int | None = None) -> float:
    """Seconds a thread has spent runnable but waiting for a CPU: the main thread of process
    ``pid``, or this thread (Linux's run-queue delay, /proc/.../schedstat); 0 where unknown."""
    where = f"/proc/{pid}/schedstat" if pid else "/proc/thread-self/schedstat"
    try:
        return int(Path(where).read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _seconds_to_end(proc: subprocess.Popen[bytes], signum: int) -> tuple[float, float]:
    """Send ``signum`` and wait for the process to end: the seconds that took, and how many of
    them its main thread (which unwinds the run) and this test waited for a CPU that other
    processes held. The process is killed after 30 seconds."""
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        before = _waiting_for_a_cpu(proc.pid) + _waiting_for_a_cpu()
        sent = time.monotonic()
        proc.send_signal(signum)
        # Blocking, so this thread is not runnable until the process ended; not reaped, so the
        # ended process's own figures can still be read.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        took = time.monotonic() - sent
        starved = _waiting_for_a_cpu(proc.pid) + _waiting_for_a_cpu() - before
    finally:
        watchdog.cancel()
        proc.wait()
    return took, starved


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_rate_limit_wait_ends_the_run_within_a_second(
    store: Store, _isolated_env: Path, signum: int
) -> None:
    """The run ends within a second of its own time: on a loaded host (CI's parallel workers on
    two cores) the process may wait longer than that for a CPU, which is no wait of the run's
    making; a Retry-After slept out, a thread joined without a timeout or a lock waited on all
    count in full."""
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        # The tenant's minute is used up: the first call waits out the minute (Retry-After). With
        # one call a minute used by a first run, a loaded host could start the second run after
        # the minute had passed: nothing to interrupt.
        running.app.limits["per_minute"] = 0
        # Under `nohup` (SIGHUP ignored) a hang-up must stay ignored; the signal under test is
        # not ignored, whatever this test runner's own parent ignores.
        nohup = signum != signal.SIGHUP

        def dispositions() -> None:
            signal.signal(signum, signal.SIG_DFL)
            if nohup:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

        proc = subprocess.Popen(
            [*SYNCCLI, "pull-products", "-c", "x"],
            env=_env(_isolated_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=dispositions,
        )
        try:
            deadline = time.monotonic() + 120
            while running.app.counters.throttled < 1:
                assert time.monotonic() < deadline, "no 429 served"
                time.sleep(0.02)
            time.sleep(0.3)  # the client is now sleeping out the Retry-After
            if nohup:
                proc.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                assert proc.poll() is None, "a SIGHUP ignored by nohup stopped the run"
            took, starved = _seconds_to_end(proc, signum)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert took - starved < 1.0, f"took {took:.2f}s, {starved:.2f}s of it waiting for a CPU"
    assert proc.returncode == 128 + signum, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    assert signal.Signals(signum).name in stderr
    leases, runs = _lease_and_runs(store)
    assert leases == []  # released
    assert runs[-1][0] == "interrupted" and runs[-1][1] is not None  # the run row closed


@pytest.mark.slow
def test_a_killed_runs_lease_on_this_host_is_taken_over_at_once(
    store: Store, _isolated_env: Path
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        running.app.faults.slow_seconds = 30.0
        running.app.faults.add("slow", 1.0, path="/Items", times=1)
        env = _env(_isolated_env)  # the default lease: 15 minutes
        cmd = [*SYNCCLI, "pull-products", "-c", "x"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120  # a loaded host took up to 22 s to get this far
            while running.app.counters.total("GET", "Items") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert _lease_and_runs(store)[0], "the first run holds the lease"
        finally:
            first.kill()  # kill -9: nothing is cleaned up
            first.wait()
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    leases, runs = _lease_and_runs(store)
    assert leases == []
    assert [outcome for outcome, _ in runs] == ["died", "ok"]
    assert all(ended is not None for _, ended in runs)


def _hold(store: Store, owner: str, minutes: float = 10) -> None:
    from datetime import UTC, datetime, timedelta

    from synccli.store.models import Lease, Run

    conn_id = store_conn_id(store)
    now = datetime.now(UTC)
    with store.session() as s:
        s.add(
            Lease(
                job="pull-products",
                connection_id=conn_id,
                owner=owner,
                expires_at=now + timedelta(minutes=minutes),
            )
        )
        s.add(Run(job="pull-products", connection_id=conn_id, started_at=now, owner=owner))


def store_conn_id(store: Store) -> int:
    from sqlalchemy import select

    with store.session() as s:
        return int(s.scalar(select(Connection.id).where(Connection.name == "x")))


def _this_host_owner(pid: int, ticks: str | None = None, namespace: str | None = None) -> str:
    """An owner as this host's processes write it (host:pid:start:boot:pidns), read from /proc."""
    me = subprocess.run(
        [sys.executable, "-c", "from synccli.procs import owner_id; print(owner_id())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host, _pid, _ticks, boot, ns = me.split(":")
    if ticks is None:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = fh.read().rsplit(")", 1)[1].split()[19]
    return f"{host}:{pid}:{ticks}:{boot}:{namespace or ns}"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_only_a_holder_known_dead_loses_its_lease_before_it_expires(store: Store, cli) -> None:
    from sqlalchemy import delete

    from synccli.store.models import Lease, Run

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    elsewhere = "cron-host-2:4000000:1:0badc0de:4026531836"
    cases = {
        "live": (_this_host_owner(sleeper.pid), 10),
        # the pid is alive, but it is a later process than the one that took the lease
        "reused pid": (_this_host_owner(sleeper.pid, ticks="1"), 10),
        # this host's boot, but a process in another container: its pid means nothing here
        "other pid namespace": (_this_host_owner(4_000_000, ticks="1", namespace="1"), 10),
        "other host": (elsewhere, 10),
        "other host, expired": (elsewhere, -1),
    }
    seen: dict[str, tuple[int, list[object]]] = {}
    try:
        with harness.start("xero", products=5) as running:
            harness.add_connection(store, "x", running)
            for case, (owner, minutes) in cases.items():
                with store.session() as s:
                    s.execute(delete(Lease))
                    s.execute(delete(Run))
                _hold(store, owner, minutes)
                result = cli("pull-products", "-c", "x")
                outcomes = [outcome for outcome, _ in _lease_and_runs(store)[1]]
                seen[case] = (result.exit_code, outcomes)
    finally:
        sleeper.kill()
        sleeper.wait()
    busy = (4, ["running"])
    assert seen == {
        "live": busy,
        "reused pid": (0, ["died", "ok"]),
        "other pid namespace": busy,
        "other host": busy,
        "other host, expired": (0, ["died", "ok"]),
    }


# --- line 14: global options anywhere; hints that work as printed ---------------------------------
def test_global_options_work_after_the_subcommand(store: Store, cli, tmp_path: Path) -> None:
    log = tmp_path / "after.log"
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        verbose = cli("pull-products", "-c", "x", "--dry-run", "-v")
        quiet = cli("pull-products", "-c", "x", "-q")
        logged = cli("status", "-c", "nosuch", "--log-format", "json", "--log-file", str(log))
        elsewhere = cli("connections", "list", "--data-dir", str(tmp_path / "other"))
    assert verbose.exit_code == 0, verbose.stderr
    assert "GET /api.xro/2.0/Items" in verbose.stderr  # -v: one line per call
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert logged.exit_code == 2
    assert json.loads(logged.stderr.splitlines()[-1])["level"] == "error"
    assert "nosuch" in log.read_text()
    assert elsewhere.exit_code == 2 and str(tmp_path / "other") in elsewhere.stderr


def _hints(text: str) -> list[list[str]]:
    """Every `synccli ...` command quoted in ``text``, as arguments."""
    import shlex

    return [shlex.split(cmd)[1:] for cmd in re.findall(r"`(synccli [^`]+)`", text)]


def test_every_hint_printed_with_several_connections_works_as_printed(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "a", running)
        harness.add_connection(store, "b", running)
        cli("invoices", "add", "-", "-c", "a", input=_order("WEB-1", "10"))
        cancelled = cli("invoices", "cancel", "WEB-1", "-c", "a")
        no_connection = cli("sync-product", "SKU-1")
        no_connection_add = cli("invoices", "add", "-", input=_order("WEB-2", "10"))
        hints = _hints(cancelled.stdout)
        assert hints, cancelled.stdout
        results = [(hint, cli(*hint)) for hint in hints]
    for hint, result in results:
        assert result.exit_code == 0, (hint, result.stderr)
    for refused in (no_connection, no_connection_add):
        assert refused.exit_code == 2
        assert "--all" not in refused.stderr, refused.stderr  # neither command has --all
        assert "-c NAME" in refused.stderr and "a, b" in refused.stderr


# --- line 15: read-only commands create nothing ---------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["connections", "list"],
        ["invoices", "list"],
        ["customers", "review"],
        ["trace", "product", "SKU-1"],
        ["db", "current"],
        ["doctor"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_read_only_command_on_a_new_machine_creates_nothing_and_names_the_path(
    cli, _isolated_env: Path, args: list[str]
) -> None:
    assert not _isolated_env.exists()
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    store = _isolated_env / "synccli.db"
    assert f"no store at {store} yet" in result.stderr + result.stdout
    assert "synccli db upgrade" in result.stderr + result.stdout
    assert not _isolated_env.exists()  # no directory, no empty store, no key file
    # `db upgrade`, as the message says, makes the store the command then reads
    assert cli("db", "upgrade").exit_code == 0
    again = cli(*args)
    assert "no store" not in again.stderr + again.stdout
    assert again.exit_code in (0, 2 if args[0] == "trace" else 0), again.stderr


# --- line 16: help and errors ---------------------------------------------------------------------
def _command_paths() -> list[list[str]]:
    import typer

    from synccli.cli.main import app

    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


TYPE_METAVARS = re.compile(r"\b(TEXT|INTEGER|FLOAT|PATH|BOOLEAN|RANGE|FILENAME|DIRECTORY)\b")


def test_help_keeps_example_lines_and_names_values_with_words(cli) -> None:
    paths = _command_paths()
    assert len(paths) > 20
    for path in paths:
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        text = result.stdout
        assert not TYPE_METAVARS.search(text), (path, TYPE_METAVARS.search(text), text)
        examples = text.split("Example:", 1)[1] if "Example:" in text else ""
        assert "synccli" in examples, (path, text)  # every command shows an example
        for line in examples.splitlines():
            # one example per line: a second `synccli` on a line means two were run together
            assert line.count("synccli ") <= 1 or "|" in line or "&&" in line, (path, line)


def _cron_jobs() -> dict[str, str]:
    """job -> its schedule in crontab.example, in words (as the help should say it)."""
    words = {}
    for line in (ROOT / "crontab.example").read_text().splitlines():
        if not line or line.startswith("#") or "=" in line.split()[0]:
            continue
        minute, hour, *_ = line.split()[:5]
        job = next(
            w
            for w in line.split()[5:]
            if not w.startswith("-")
            and w[0].isalpha()
            and w not in ("synccli", "json")
            and not w.startswith("/")
        )
        if minute.startswith("*/"):
            words[job] = f"every {minute[2:]} minutes"
        elif hour.startswith("*/"):
            words[job] = f"every {hour[2:]} hours"
        elif hour.isdigit():
            words[job] = "every night"
    return words


def test_help_frequencies_match_crontab_example(cli) -> None:
    jobs = _cron_jobs()
    assert set(jobs) == {"pull-products", "sweep-oldest", "link-customers", "post-invoices"}
    for job, phrase in jobs.items():
        text = " ".join(cli(job, "--help").stdout.split())
        assert phrase in text, (job, phrase, text)
        others = set(re.findall(r"every \d+ (?:minutes|hours)|every hour|every night", text))
        assert others == {phrase}, (job, others)


@pytest.mark.parametrize(
    "args",
    [["pull-products", "--bogus"], ["sync-product"], ["nosuch"], ["--log-format", "xml", "status"]],
    ids=["unknown option", "missing argument", "unknown command", "bad value"],
)
def test_usage_errors_speak_in_the_one_error_style(cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--help" in lines[0]


def test_status_reports_a_dead_runs_row_as_died_once_its_lease_expired(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        _hold(store, "cron-host-2:4000000:1:0badc0de:4026531836", minutes=-1)  # expired
        dead = json.loads(cli("status", "--json").stdout)[0]["jobs"]
        with store.session() as s:
            s.execute(update(Lease).values(expires_at=datetime.now(UTC) + timedelta(minutes=5)))
        alive = json.loads(cli("status", "--json").stdout)[0]["jobs"]
        text = cli("status").stdout
    assert [(j["job"], j["outcome"], j["ended_at"]) for j in dead] == [
        ("pull-products", "died", None)
    ]
    assert [j["outcome"] for j in alive] == ["running"]
    assert "running" in text


def test_call_log_lines_print_large_remaining_counts_as_plain_numbers(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        running.app.limits["per_day"] = 5_000_000  # an account with a generous day
        result = cli("-v", "pull-products", "-c", "x")
    assert result.exit_code == 0, result.stderr
    call = next(line for line in result.stderr.splitlines() if "/Items" in line)
    assert "day=4999999" in call, call
    assert not EXPONENT.search(call), call


def test_authorize_under_log_format_json_speaks_json_on_stderr(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        result = cli(
            "--log-format", "json", "connections", "authorize", "x", "--timeout", "0.5", input=""
        )
    lines = result.stderr.splitlines()
    assert any("Open this URL" in json.loads(line)["message"] for line in lines), lines
    for line in lines:
        json.loads(line)


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run synccli with stdout and stderr on a pseudo-terminal; its exit code and what it showed
    (colours stripped)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*SYNCCLI, *args],
        env={**env, "TERM": "xterm", "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=60)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_on_a_terminal_a_usage_error_is_the_same_one_line(_isolated_env: Path) -> None:
    code, shown = _on_a_terminal(["pull-products", "--bogus"], _env(_isolated_env))
    assert code == 2
    assert shown.strip().splitlines() == [
        "error: No such option: --bogus (see `synccli pull-products --help`)"
    ], shown
