"""The shared store: PostgreSQL, for several scepd nodes on one database, split like sqlite/.

connection.py owns the connections (threads, transactions, retries, faults),
migrations.py the schema, codecs.py how it writes times and flags (the
rest of each row is scepd/store/rows.py); one module per role holds that role's SQL, and store.py joins them into
`PostgresStore`. It needs psycopg 3 (the `postgres` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scepd.store.postgres.migrations import MIGRATIONS
from scepd.store.postgres.store import PostgresStore

__all__ = ["MIGRATIONS", "PostgresStore"]

if TYPE_CHECKING:
    from scepd.store.roles import Store

    def _implements_every_role(store: PostgresStore) -> Store:
        """mypy proves here that PostgresStore is a `Store` (every role, with matching signatures)."""
        return store
