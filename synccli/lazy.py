"""Modules imported on first use, for the CLI's command modules.

Every cron run starts the whole CLI, and typer needs every command registered (their options)
to parse one: a command module that imported its job's machinery at the top made each run pay
for every job's (the connectors and their HTTP stack, the planner, the doctor). A module named
here is bound at once and executed when one of its attributes is first read, so a command pays
only for what it runs. Type checkers see a plain import (``TYPE_CHECKING``) beside each use.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """``name``, imported when an attribute of it is first read (at once if already loaded)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as an import binds a submodule on its package
        setattr(sys.modules[parent], child, module)
    return module
