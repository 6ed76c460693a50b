"""What a store test needs to reach below the roles on either backend: switching writes off (a
refusal from the database itself, not a mock), reading a raw row, and the health modules' knobs."""

from __future__ import annotations

from typing import Any

import pytest

from scepd.store.postgres import PostgresStore
from scepd.store.postgres import health as postgres_health
from scepd.store.sqlite import health as sqlite_health


def is_postgres(store: Any) -> bool:
    return isinstance(store, PostgresStore)


async def set_read_only(store: Any, on: bool) -> None:
    """Make the store's write connection refuse writes (SQLite: query_only; PostgreSQL: read-only transactions)."""
    if is_postgres(store):
        setting = "on" if on else "off"
        await store.database.run(lambda conn: conn.execute(f"SET default_transaction_read_only = {setting}"))
    else:
        await store.database.run(lambda conn: conn.execute(f"PRAGMA query_only = {int(on)}"))


def first(row: Any) -> Any:
    """The first column of a row from either driver (sqlite3.Row or psycopg's dict row)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def set_recent_commit(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    for module in (sqlite_health, postgres_health):
        monkeypatch.setattr(module, "RECENT_COMMIT", seconds)
