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


def open_store(location: str | Path) -> AbstractAsyncContextManager[Store]:
    """The store at `location`, closed when the context ends: PostgreSQL for a postgresql:// URL, else SQLite."""
    if is_postgres_url(location):
        # Imported here: psycopg is an optional extra, needed only by deployments that use it.
        from scepd.store.postgres import PostgresStore

        return PostgresStore.open(str(location))
    return SqliteStore.open(location)
