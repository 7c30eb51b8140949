"""``synccli sandbox serve``: a local simulator of a provider's API, on loopback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from synccli import registry
from synccli.cli import output
from synccli.cli.state import state
from synccli.errors import UsageError

app = typer.Typer(
    help="Local simulators of the providers' APIs.\n\nExample:\n\n"
    "    synccli sandbox serve --provider xero --products 5000",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sandbox")


@app.command("serve")
def serve(
    ctx: typer.Context,
    provider: str = typer.Option(..., "--provider", help=f"{registry.choices()}."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (loopback by default)."
    ),
    port: int = typer.Option(0, "--port", help="Port (0: any free port)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the generated data."),
    products: int = typer.Option(50, "--products", help="Products to generate."),
    customers: int = typer.Option(30, "--customers", help="Customers to generate."),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="Speed up rate-limit windows by this factor."
    ),
    faults: str | None = typer.Option(
        None,
        "--faults",
        help="e.g. '500:0.1,lost:0.1@PUT:/Invoices,slow:0.05'; 'drop:0.05' drops 5% of the "
        "webhook deliveries ('drop:0.2@:product' a fifth of the product events).",
    ),
    connect: str | None = typer.Option(
        None,
        "--connect",
        help="Also point a store connection with this name at the sandbox: a new one, or one an "
        "earlier serve made (a merchant's connection is refused).",
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", help="Stop after this many seconds (default: Ctrl-C)."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        metavar="FILE",
        help="Write a personal token the sandbox accepts to FILE (mode 0600; a provider with "
        "personal tokens only), for `connections add ... --grant personal_token --secret-stdin "
        "< FILE`.",
    ),
) -> None:
    """Serve a simulator of a provider's API and print its base URL.

    Example:

        synccli sandbox serve --provider xero --products 5000 --connect demo-xero
        synccli sandbox serve --provider lightspeed-x --port 8800 --token-file token.txt
    """
    if provider not in registry.names():
        raise UsageError(
            f"unknown provider {provider!r}: choose one of {', '.join(registry.names())}"
        )
    from synccli.sandbox import harness  # a simulator: only this command's

    try:
        running = harness.start(
            provider,
            host=host,
            port=port,
            seed=seed,
            products=products,
            customers=customers,
            time_scale=time_scale,
            faults=faults,
        )
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if token_file is not None:
        try:
            _write_token(running.app, provider, token_file)
        except BaseException:
            running.stop()
            raise
    if connect:
        try:
            harness.connect(state(ctx).store(), connect, running, time_scale=time_scale)
        except BaseException:
            running.stop()
            raise
        output.line(f"connection {connect} points at the sandbox")
    print(running.url, flush=True)
    try:
        deadline = time.monotonic() + seconds if seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


def _write_token(app: object, provider: str, path: Path) -> None:
    """A personal token from the simulator, readable by its owner only: it is a credential the
    sandbox accepts, so it is kept off the terminal like any other."""
    make = getattr(app, "personal_token", None)
    if make is None:
        raise UsageError(
            f"--token-file: the {provider} sandbox has no personal tokens; "
            "use --connect NAME instead"
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, f"{make()}\n".encode())
    finally:
        os.close(fd)
