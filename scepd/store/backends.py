"""Choosing the store backend: the one place that names a concrete store class.

Callers open the store through `open_store` and see only the `Store`
protocol, so mypy holds them to the roles; a second backend is chosen here
(by the form of the location, or a configuration key passed down), not at
every call site.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from scepd.store.roles import Store
from scepd.store.sqlite import SqliteStore


def open_store(location: str | Path) -> AbstractAsyncContextManager[Store]:
    """The store at `location`, closed when the context ends. Today: the SQLite file at that path."""
    return SqliteStore.open(location)
