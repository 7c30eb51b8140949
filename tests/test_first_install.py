"""Issue 18, first install against a real account: `--version`, connections add/set that check
every setting before storing it and take secrets only from stdin or the environment (a prompt
that does not echo on a terminal), and `connections authorize` on a fixed port whose printed
redirect URI is the one registered with the provider."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import synccli
from synccli import registry
from synccli.sandbox import harness
from synccli.store.connections import add_connection, credentials, get_connection
from synccli.store.db import Store

SECRET = "typed-secret-5d1e0c9a77"

OAUTH = [p.name for p in registry.providers() if p.oauth]  # those a browser authorises


def _added(cli, *args: str, input: str | None = None):
    assert cli("db", "upgrade").exit_code == 0
    return cli("connections", "add", *args, input=input)


# --version --------------------------------------------------------------------------------------
def test_version_is_printed(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"synccli {synccli.__version__}"


# connections add ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--provider", "xero", "--client-id", "app1", "--client-secret", ""],
        ["--provider", "xero", "--client-id", "app1"],
        ["--provider", "lightspeed", "--client-id", "app1", "--secret-stdin"],
        ["--provider", "unleashed", "--api-id", "id-1", "--api-key", "  "],
    ],
    ids=["empty-option", "none", "empty-stdin", "blank-key"],
)
def test_add_refuses_an_empty_secret(cli, args: list[str]) -> None:
    result = _added(cli, "shop", *args, input="\n")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "secret" in result.stderr or "api key" in result.stderr
    assert "shop" not in cli("connections", "list").stdout


@pytest.mark.parametrize(
    "provider,args,key",
    [
        ("xero", ["--set", "acount_code=200"], "acount_code"),
        ("xero", ["--set", "give_up_after=7 days"], "give_up_after"),
        ("xero", ["--set", "retry_schedule=2h,later"], "retry_schedule"),
        ("xero", ["--set", "invoice_batch=500"], "invoice_batch"),
        ("xero", ["--base-url", "api.xero.com"], "base_url"),
        ("xero", ["--grant", "password"], "grant"),
        ("xero", ["--tenant-id", "Demo Company (NZ)"], "tenant_id"),
        ("xero", ["--notify-email", "owner at shop"], "notify_email"),
        ("lightspeed", ["--set", "register_id=front desk"], "register_id"),
        ("lightspeed", ["--set", "sweep_days=0"], "sweep_days"),
        ("unleashed", ["--set", "stock_field=Available"], "stock_field"),
        ("unleashed", ["--set", "lookup_batch=5000"], "lookup_batch"),
    ],
)
def test_add_checks_every_setting_and_names_the_key(
    cli, provider: str, args: list[str], key: str
) -> None:
    ident = ["--api-id", "id-1"] if provider == "unleashed" else ["--client-id", "app1"]
    result = _added(cli, "shop", "--provider", provider, *ident, "--secret-stdin", *args,
                    input=SECRET + "\n")  # fmt: skip
    assert result.exit_code == 2, result.stdout + result.stderr
    assert key in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert SECRET not in result.stdout + result.stderr
    assert "shop" not in cli("connections", "list").stdout  # nothing written


@pytest.mark.parametrize("provider", OAUTH)
def test_add_prints_the_next_step(cli, provider: str) -> None:
    result = _added(cli, "shop", "--provider", provider, "--client-id", "app1", "--secret-stdin",
                    input=SECRET + "\n")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "synccli connections authorize shop" in result.stdout


# connections set ------------------------------------------------------------------------------
@pytest.fixture
def shop(cli, store: Store):
    added = _added(cli, "shop", "--provider", "xero", "--client-id", "app1", "--secret-stdin",
                   input=SECRET + "\n")  # fmt: skip
    assert added.exit_code == 0, added.stderr
    return get_connection(store, "shop")


@pytest.mark.parametrize(
    "pair,key",
    [
        ("acount_code=200", "acount_code"),
        ("give_up_after=a week", "give_up_after"),
        ("base_url=ftp://files.example", "base_url"),
        ("invoice_batch=0", "invoice_batch"),
        ("client_secret=" + SECRET, "client_secret"),
    ],
)
def test_set_checks_like_add(cli, store: Store, shop, pair: str, key: str) -> None:
    result = cli("connections", "set", "shop", "account_code=310", pair)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert key in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "account_code" not in get_connection(store, "shop").settings  # nothing written


def test_set_takes_the_secret_from_stdin_or_the_environment(cli, store: Store, shop) -> None:
    piped = cli("connections", "set", "shop", "--secret-stdin", input="from-stdin-1\n")
    assert piped.exit_code == 0, piped.stderr
    assert credentials(store, get_connection(store, "shop"))["client_secret"] == "from-stdin-1"
    env = cli("connections", "set", "shop", "--secret-env", "MY_XERO_SECRET",
              env={"MY_XERO_SECRET": "from-env-2"})  # fmt: skip
    assert env.exit_code == 0, env.stderr
    assert credentials(store, get_connection(store, "shop"))["client_secret"] == "from-env-2"
    missing = cli("connections", "set", "shop", "--secret-env", "NOT_SET_ANYWHERE")
    assert missing.exit_code == 2 and "NOT_SET_ANYWHERE" in missing.stderr
    for out in (piped, env):
        assert "from-" not in out.stdout + out.stderr


def _run_on_a_terminal(args: list[str], typed: str, data_dir: Path) -> tuple[int, str]:
    """Run ``synccli ARGS`` with a pseudo-terminal as its controlling terminal and stdin; type
    ``typed`` once it prompts. Returns the exit code and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        env = {**os.environ, "SYNC_DATA_DIR": str(data_dir)}
        os.execve(sys.executable, [sys.executable, "-m", "synccli", *args], env)
    shown = b""
    deadline = time.monotonic() + 30
    typed_yet = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        if not typed_yet and b":" in shown:
            time.sleep(0.3)  # the prompt is printed before echo is turned off
            os.write(fd, typed.encode() + b"\r")
            typed_yet = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


@pytest.mark.slow
def test_secret_stdin_on_a_terminal_prompts_without_echo(
    cli, store: Store, shop, _isolated_env: Path
) -> None:
    code, shown = _run_on_a_terminal(
        ["connections", "set", "shop", "--secret-stdin"], "typed-on-tty-9", _isolated_env
    )
    assert code == 0, shown
    assert "client secret" in shown.lower()  # it asked
    assert "typed-on-tty-9" not in shown  # and did not echo
    assert credentials(store, get_connection(store, "shop"))["client_secret"] == "typed-on-tty-9"


# connections authorize ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _authorize(data_dir: Path, *args: str, paste: bool = False):
    """``synccli connections authorize ARGS`` as a process; returns it and its authorize URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "synccli", "connections", "authorize", *args],
        env={**os.environ, "SYNC_DATA_DIR": str(data_dir)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    said = []
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        said.append(line)
        if "response_type=code" in line:  # every provider's consent page (/authorize, /connect)
            url = line.strip()
    return proc, url, said


@pytest.mark.slow
@pytest.mark.parametrize("provider", [p for p in OAUTH if p in registry.suite_names()])
def test_authorize_listens_on_the_fixed_port_it_tells_to_register(
    store: Store, provider: str, _isolated_env: Path
) -> None:
    port = _free_port()
    registered = f"http://localhost:{port}/callback"
    with harness.start(provider, products=2) as running:
        settings, creds = harness.connection_values(running)
        for key in ("tenant_id", "account_id"):
            settings.pop(key, None)
        running.app.add_client(
            settings["client_id"], creds["client_secret"], redirect_uris=[registered]
        )
        add_connection(store, "c", provider, settings, {"client_secret": creds["client_secret"]})
        proc, url, said = _authorize(_isolated_env, "c", "--port", str(port), "--timeout", "20")
        try:
            assert url is not None, "".join(said)
            assert any(registered in line for line in said), "".join(said)
            answer = requests.get(url, timeout=10)  # the browser: approve, follow the redirect
            assert answer.status_code == 200, answer.text
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, "".join(said) + err
    assert credentials(store, get_connection(store, "c")).get("refresh_token")


@pytest.mark.slow
def test_authorize_without_port_uses_one_fixed_redirect_uri(
    store: Store, _isolated_env: Path
) -> None:
    with harness.start("xero", products=1) as running:
        settings, creds = harness.connection_values(running)
        add_connection(store, "c", "xero", settings, {"client_secret": creds["client_secret"]})
        seen = []
        for _ in range(2):
            proc, url, said = _authorize(_isolated_env, "c", "--timeout", "0.5")
            proc.communicate(timeout=30)
            seen.append(next(line for line in said if "redirect" in line.lower()))
    assert seen[0] == seen[1]
    assert "http://localhost:8765/callback" in seen[0]


@pytest.mark.slow
def test_authorize_with_a_registered_https_redirect_takes_the_pasted_address(
    store: Store, _isolated_env: Path
) -> None:
    """Lightspeed registers only HTTPS redirect URLs (its notes, §1, changelog 2023-09-26): the
    browser lands on the merchant's registered page and the address is pasted back."""
    registered = "https://shop.example/synccli/callback"
    with harness.start("lightspeed", products=1) as running:
        settings, creds = harness.connection_values(running)
        settings.pop("account_id", None)
        running.app.add_client(
            settings["client_id"], creds["client_secret"], redirect_uris=[registered]
        )
        secret = {"client_secret": creds["client_secret"]}
        add_connection(store, "c", "lightspeed", settings, secret)
        proc, url, said = _authorize(_isolated_env, "c", "--redirect-uri", registered,
                                     "--timeout", "20")  # fmt: skip
        try:
            assert url is not None, "".join(said)
            answer = requests.get(url, timeout=10, allow_redirects=False)
            landed = answer.headers["Location"]
            assert landed.startswith(registered + "?")
            out, err = proc.communicate(landed + "\n", timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, "".join(said) + err
    assert credentials(store, get_connection(store, "c")).get("refresh_token")


# connections ids --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "provider,settings",
    [
        ("xero", ["tenant_id"]),
        ("unleashed", ["warehouse_code"]),
        ("lightspeed", ["shop_id", "register_id", "employee_id", "payment_type_id"]),
    ],
)
def test_connections_ids_lists_what_each_id_setting_may_be(
    cli, store: Store, provider: str, settings: list[str]
) -> None:
    with harness.start(provider, products=1) as running:
        conn = harness.add_connection(store, "c", running)
        result = cli("connections", "ids", "c", "--json")
        assert result.exit_code == 0, result.stderr
    import json

    found = json.loads(result.stdout)
    assert sorted(found) == sorted(settings)
    for setting in settings:
        assert found[setting] and all(row["id"] and row["name"] for row in found[setting])
    if provider == "xero":
        assert conn.settings["tenant_id"] in [row["id"] for row in found["tenant_id"]]
    if provider == "unleashed":
        assert [row["id"] for row in found["warehouse_code"]] == ["W1"]  # the simulator's one


# crontab.example, as cron runs it ---------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def _crontab() -> tuple[dict[str, str], list[str]]:
    """crontab.example's environment lines and its jobs' commands."""
    env: dict[str, str] = {}
    jobs: list[str] = []
    for line in (ROOT / "crontab.example").read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split(None, 5)
        if "=" in fields[0] and not fields[0][0].isdigit() and fields[0][0] != "*":
            key, _, value = text.partition("=")
            env[key.strip()] = value.strip()
        else:
            jobs.append(fields[5])
    return env, jobs


@pytest.mark.slow
def test_crontab_example_runs_as_installed_under_cron(store: Store, tmp_path: Path) -> None:
    """Each job as cron runs it: `sh -c` with nothing but the crontab's own variables (cron's
    short PATH, no profile), synccli where README's Production section installs it (here: the
    test's virtualenv in its place), the data and log directories the crontab names (here:
    the test's)."""
    env, jobs = _crontab()
    assert len(jobs) == 4
    assert "SYNC_DATA_DIR" in env
    installed = Path(sys.executable).parent / "synccli"
    logs = tmp_path / "log"
    logs.mkdir()
    with harness.start("xero", products=3, customers=2) as running:
        harness.add_connection(store, "shop", running, notify_email="owner@shop.example")
        for job in jobs:
            assert job.startswith("/"), f"cron cannot find a bare command: {job}"
            command = job.replace("/usr/local/bin/synccli", str(installed)).replace(
                "/var/log/synccli/", f"{logs}/"
            )
            cron_env = {**env, "HOME": str(tmp_path), "LOGNAME": "shopsync"}
            cron_env["SYNC_DATA_DIR"] = str(store.settings.data_dir)
            done = subprocess.run(
                ["/bin/sh", "-c", command], env=cron_env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, (job, done.stderr)
            assert done.stdout == "" and done.stderr == ""  # -q: quiet unless something failed
    records = (logs / "synccli.log").read_text().splitlines()
    assert sum('"outcome": "ok"' in r or '"outcome":"ok"' in r for r in records) == 4, records
