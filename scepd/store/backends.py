"""Choosing the store backend: the one place that names a concrete store class.

Callers open the store through `open_store` and see only the `Store`
protocol, so mypy holds them to the roles. The location picks the backend:
a postgresql:// URL (`[store] url`) is a PostgreSQL database, anything else
the SQLite file at that path (`[store] path`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from scepd.store.roles import Store
from scepd.store.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_store(location: str | Path, *, connect_later: bool = False) -> AbstractAsyncContextManager[Store]:
    """The store at `location`, closed when the context ends: PostgreSQL for a postgresql:// URL, else SQLite.

    `connect_later` is for the daemon: a PostgreSQL database that cannot be reached yet makes a store
    whose calls fail (503s) until it can, instead of an error here. A CLI command fails at once. SQLite
    ignores it: a local file that cannot be opened is a configuration or disk problem, not a wait."""
    if is_postgres_url(location):
        # Imported here: psycopg is an optional extra, needed only by deployments that use it.
        from scepd.store.postgres import PostgresStore

        return PostgresStore.open(str(location), connect_later=connect_later)
    return SqliteStore.open(location)
