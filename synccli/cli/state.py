"""Per-invocation state shared by commands: verbosity, settings and the store, opened lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    # Settings bring SQLAlchemy, the store its models: a command that fails before it needs
    # them (a usage error, ``--help``) pays for neither.
    from synccli.config import Settings
    from synccli.store.db import Store


@dataclass
class AppState:
    verbosity: int = 0
    database_url: str | None = None
    data_dir: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from synccli.config import load_settings

            self._settings = load_settings(self.database_url, self.data_dir)
        return self._settings

    def store(self, check: bool = True, create: bool = False) -> Store:
        """The store; with ``check`` an out-of-date schema stops the command (exit 2). Only
        ``create`` (``db upgrade``) makes a SQLite file that is not there yet: any other command
        says where it looked and creates nothing."""
        if self._store is None:
            from synccli.store.db import open_store

            self._store = open_store(self.settings, check=check, create=create)
        elif check:
            self._store.check_schema()
        return self._store

    @property
    def lock_timeout(self) -> float | None:
        """The store's lock timeout in seconds, once settings were read (for error messages)."""
        return self._settings.lock_timeout if self._settings is not None else None

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_object(AppState)
    if obj is None:  # a sub-app invoked on its own (tests)
        obj = AppState()
        ctx.obj = obj
    return obj
