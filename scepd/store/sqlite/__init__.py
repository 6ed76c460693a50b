"""The embedded store: SQLite, split along the roles of scepd/store/roles.py.

connection.py owns the connection (threads, transactions, faults),
migrations.py the schema, codecs.py how it writes times and flags (the
rest of each row is scepd/store/rows.py); one module per role holds that role's SQL, and store.py joins them into
`SqliteStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scepd.store.sqlite.migrations import MIGRATIONS
from scepd.store.sqlite.store import SqliteStore

__all__ = ["MIGRATIONS", "SqliteStore"]

if TYPE_CHECKING:
    from scepd.store.roles import Store

    def _implements_every_role(store: SqliteStore) -> Store:
        """mypy proves here that SqliteStore is a `Store` (every role, with matching signatures)."""
        return store
