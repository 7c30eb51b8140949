"""Option values that are already of their parameter's type, passed on without pydantic.

typer (0.29 and later) checks every parameter's value with a pydantic ``TypeAdapter`` it builds
on first use, even for a default left alone: a cron run of ``post-invoices --all`` imported
pydantic and built nine adapters to be told ``0`` is an int and ``"text"`` a str, a fifth of its
CPU time. pydantic answers such a value unchanged (a repeatable option's strings as a list), so
this hands those on as they are; any other value (text from the command line for an int or a
path, a ranged number) goes to typer's own check, built then, so its messages are typer's.
Older typer releases have no such step, and this does nothing there.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

PLAIN = (str, int, float)


class QuickCoercion:
    """Stands in for typer's runtime check of one parameter until a value needs the real one."""

    def __init__(self, param: Any) -> None:
        self.param = param

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as typer's own: nothing given, nothing checked
            return () if param.multiple or param.nargs == -1 else None
        descriptor = param.type_descriptor
        annotation = descriptor.annotation
        if not getattr(descriptor, "is_ranged", True):
            if annotation in PLAIN and type(value) is annotation:
                return value
            if (
                get_origin(annotation) is list
                and get_args(annotation) == (str,)
                and isinstance(value, (list, tuple))
                and all(type(item) is str for item in value)
            ):
                return list(value)
        from typer._coercion import build_runtime_param

        real = build_runtime_param(descriptor)
        param._runtime_param = real
        return real.coerce(value, param=param, ctx=ctx)


def quicken(command: Any, ctx: Any) -> Any:
    """``command`` with each of its parameters' checks deferred (see the module), its help
    option's too (made for ``ctx``: a command's context takes its help names from its
    parent's); answers it."""
    for param in command.get_params(ctx) if command is not None else ():
        if hasattr(param, "type_descriptor") and getattr(param, "_runtime_param", 0) is None:
            param._runtime_param = QuickCoercion(param)
    return command
