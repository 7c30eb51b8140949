"""The ``synccli`` command: global options, the error-to-exit-code mapping, and sub-commands.

Commands are thin: parse options, call one library function, render the result.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer 0.29+ carries its own copy of click
    from typer._click.core import Context as ClickContext
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on click
    from click.core import Context as ClickContext  # type: ignore[no-redef]
    from click.exceptions import ClickException  # type: ignore[no-redef]

from synccli import interrupt
from synccli.cli import helptext, output
from synccli.cli.coerce import quicken
from synccli.cli.state import AppState
from synccli.errors import SyncError
from synccli.logs import setup_logging
from synccli.outcomes import outcome_of
from synccli.store.outage import store_outage

# Global options: accepted after the subcommand too (`synccli pull-products --dry-run -v`).
GLOBAL_FLAGS = frozenset({"-v", "--verbose", "-q", "--quiet"})
GLOBAL_VALUED = frozenset({"--log-format", "--log-file", "--database-url", "--data-dir"})


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after the subcommand to before it, where the parser reads
    them. No subcommand defines an option of these names; ``--`` ends the search."""
    i = 0
    while i < len(args) and args[i] != "--" and args[i].startswith("-"):
        i += 2 if args[i] in GLOBAL_VALUED else 1
    front, rest = args[:i], args[i:]
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            kept.extend(rest[j:])
            break
        if arg in GLOBAL_FLAGS or (len(arg) > 2 and arg[0] == "-" and set(arg[1:]) == {"v"}):
            moved.append(arg)
            j += 1
        elif arg.split("=", 1)[0] in GLOBAL_VALUED:
            width = 1 if "=" in arg else 2
            moved.extend(rest[j : j + width])
            j += width
        else:
            kept.append(arg)
            j += 1
    return front + moved + kept


def _wants_json_logs(args: list[str]) -> bool:
    for i, arg in enumerate(args):
        if arg == "--":
            return False
        if arg == "--log-format=json" or (
            arg == "--log-format" and args[i + 1 : i + 2] == ["json"]
        ):
            return True
    return False


class SyncGroup(TyperGroup):
    """Maps every error to one line on stderr and its exit code (:mod:`synccli.outcomes`).

    A command's module is imported, and its command built, when the command line names it:
    building every command (each one's signature read, its options made) and importing every
    command's module cost a cron run of ``post-invoices`` a tenth of its CPU. Anything that
    lists the commands (help, a mistyped name, ``commands``) builds them all, in the order
    they were always listed."""

    _built: dict[str, Any]
    _all_built: bool

    @property
    def commands(self) -> MutableMapping[str, Any]:
        if not self._all_built:
            built = _build(COMMANDS.values())
            # those built already stay (their options were already made ready for a run)
            self._built = {name: self._built.get(name, cmd) for name, cmd in built.items()}
            self._all_built = True
        return self._built

    @commands.setter
    def commands(self, value: MutableMapping[str, Any]) -> None:
        self._built = dict(value)
        self._all_built = False

    def built_commands(self) -> dict[str, Any]:
        """The commands built so far (:func:`helptext.polish` polishes those)."""
        return self._built

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self._built and not self._all_built and cmd_name in COMMANDS:
            self._built.update(_build([COMMANDS[cmd_name]], only=cmd_name))
        return self._built.get(cmd_name)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        quicken(self, ctx)
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        return name, quicken(command, ctx), rest

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """The CLI framework's own errors (unknown option, missing argument) in the tool's one
        error style, and a reader that went away (``| head``) ending the output quietly."""
        standalone_mode = kwargs.pop("standalone_mode", True)
        code: int | str | None
        helptext.polish(self)
        given = args[0] if args else kwargs.get("args")
        if _wants_json_logs(list(sys.argv[1:] if given is None else given)):
            # An unknown command is refused before the options are applied: speak JSON already.
            setup_logging(0, "json", None)
        try:
            with interrupt.handled():
                rv = super().main(*args, **{**kwargs, "standalone_mode": False})
        except typer.Exit as exc:
            code = exc.exit_code
        except ClickException as exc:
            where_ctx = getattr(exc, "ctx", None)
            where = f" (see `{where_ctx.command_path} --help`)" if where_ctx else ""
            output.error_line(f"{exc.format_message()}{where}")
            code = exc.exit_code
        except typer.Abort:
            output.error_line("aborted")
            code = 1
        except BrokenPipeError:
            output.stdout_gone()
            code = 0
        except SystemExit as exc:
            # The framework turns a broken pipe while printing help into exit 1, after wrapping
            # stdout to silence it: that reader went away, nothing failed.
            if type(sys.stdout).__name__ != "PacifyFlushWrapper":
                raise
            output.stdout_gone()
            code = 0 if exc.code == 1 else exc.code
        else:
            if not standalone_mode:
                return rv
            # without standalone mode the framework returns an exit's code (ctx.exit(2))
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        if not standalone_mode:
            return code
        output.flush()
        sys.exit(code)

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except SyncError as err:
            self._fail(ctx, err)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the run closed itself
            name = exc.args[0] if isinstance(exc, interrupt.Interrupted) else "SIGINT"
            output.error_line(f"interrupted ({name})")
            ctx.exit(outcome_of(exc).exit_code)
        except BrokenPipeError:
            raise  # the reader went away: see main()
        except Exception as exc:  # a bug: say so in one line, the traceback only with -v
            if type(exc).__module__.startswith(("typer", "click")):
                raise  # usage errors, --help and exits: the CLI framework renders them
            state = ctx.find_object(AppState)
            outage = store_outage(exc, state.lock_timeout if state is not None else None)
            if outage is not None:  # the store failed under us: not a bug
                self._fail(ctx, outage)
            first = (str(exc).splitlines() or [""])[0][:300]  # not the SQL and its parameters
            output.error_line(f"internal error: {exc.__class__.__name__}: {first}")
            state = ctx.find_object(AppState)
            if state is not None and state.verbosity > 0:
                output.detail(traceback.format_exc())
            ctx.exit(outcome_of(exc).exit_code)

    @staticmethod
    def _fail(ctx: ClickContext, err: SyncError) -> None:
        output.error_line(err.message)
        state = ctx.find_object(AppState)
        if state is not None and state.verbosity > 0:
            if err.detail:
                output.detail(err.detail)
            if state.verbosity > 1:
                output.detail(traceback.format_exc())
        ctx.exit(outcome_of(err).exit_code)


app = typer.Typer(
    cls=SyncGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Keep a shop's database in step with Xero, Unleashed or Lightspeed on few API calls.\n\n"
    "Example:\n\n    synccli pull-products --all",
)


def _print_version(value: bool) -> None:
    if value:
        from synccli import __version__

        output.line(f"synccli {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More detail: -v one line per API call, -vv debug."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print nothing unless something failed."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", help="text (human) or json (one object per line)."
    ),
    log_file: Path | None = typer.Option(
        None, "--log-file", help="Also write logs to this file (for cron)."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Store URL (overrides SYNC_DATABASE_URL)."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (overrides SYNC_DATA_DIR)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print synccli's version and exit.",
    ),
) -> None:
    """Keep a shop's database in step with a provider.

    Example:

        synccli -v pull-products --connection shop1 --dry-run
        synccli pull-products -c shop1 --dry-run -v     # global options after the command too
    """
    if log_format not in ("text", "json"):
        raise typer.BadParameter("use text or json", param_hint="--log-format")
    verbosity = -1 if quiet else verbose
    setup_logging(verbosity, log_format, log_file)
    ctx.obj = AppState(verbosity=verbosity, database_url=database_url, data_dir=data_dir)
    logging.getLogger("synccli").debug("synccli started")


# Each top-level command, by name, and the module that registers it on the root app; help lists
# the commands as registering them all in this order does (typer: commands before groups).
# A test keeps this equal to what the modules register.
COMMANDS = {
    "db": "commands_db",
    "connections": "commands_connections",
    "status": "commands_status",
    "sandbox": "commands_sandbox",
    "pull-products": "commands_products",
    "sweep-oldest": "commands_products",
    "sync-product": "commands_products",
    "link-customers": "commands_customers",
    "customers": "commands_customers",
    "invoices": "commands_invoices",
    "post-invoices": "commands_invoices",
    "plan": "commands_ops",
    "doctor": "commands_ops",
    "trace": "commands_ops",
    "demo": "commands_ops",
    "providers": "commands_providers",
    "webhooks": "commands_webhooks",
}


def register(root: typer.Typer, module_name: str) -> None:
    """Put the commands of one module of ``synccli.cli`` on ``root`` (a module not shipped is
    left out)."""
    try:
        module = __import__(f"synccli.cli.{module_name}", fromlist=["register"])
    except ModuleNotFoundError as exc:
        if exc.name != f"synccli.cli.{module_name}":
            raise
        return
    if module_name in ("commands_db", "commands_connections"):
        root.add_typer(module.app, name=module_name.removeprefix("commands_"))
    else:
        module.register(root)


def _build(module_names: Any, only: str | None = None) -> dict[str, Any]:
    """The commands the modules register on the root app (``only``: that one of them), built as
    the root app builds its own (same markup mode, same errors), in typer's order, each
    polished for help."""
    root = typer.Typer(
        add_completion=False,
        rich_markup_mode=app.rich_markup_mode,
        pretty_exceptions_short=app.pretty_exceptions_short,
        suggest_commands=app.suggest_commands,
    )
    for module_name in dict.fromkeys(module_names):
        register(root, module_name)
    if only is not None:
        # the others of its module are not built (``invoices`` and its five commands, for
        # ``post-invoices``): every command of ours is registered under its name
        root.registered_commands = [c for c in root.registered_commands if c.name == only]
        root.registered_groups = [g for g in root.registered_groups if g.name == only]
    if not root.registered_commands and not root.registered_groups:
        return {}
    commands = dict(typer.main.get_group(root).commands)
    for command in commands.values():
        helptext.polish(command)
    return commands


def run() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="synccli")
    except SystemExit as exc:
        if not interrupt.STOP.is_set():
            raise
        # Stopped by a signal: the run is closed and its lease released. Skip the interpreter's
        # teardown of every imported module (half a second on a busy host), so Ctrl-C and
        # SIGTERM end the process within the second.
        code = exc.code if isinstance(exc.code, int) else 1
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
