"""`StoreHealth` on SQLite: the fault state of the shared connection, and a one-row write probe."""

from __future__ import annotations

from scepd.clock import utc_now
from scepd.store.base import StoreError
from scepd.store.sqlite.codecs import encode_time
from scepd.store.sqlite.connection import OnDatabase


class SqliteHealth(OnDatabase):
    @property
    def fault(self) -> StoreError | None:
        return self.database.fault

    async def ping(self) -> None:
        """Commit a one-row write: proves the file is writable and the lock obtainable."""
        await self.database.execute(
            "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
            (encode_time(utc_now()),),
        )
