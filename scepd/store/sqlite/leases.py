"""`Leases` on SQLite: one row per lease name.

An SQLite file serves one node, so its own clock is the only one involved. The time is read on the
store's thread, when the statement runs, not when the call was queued.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from scepd.clock import utc_now
from scepd.store.sqlite.codecs import encode_time
from scepd.store.sqlite.connection import OnDatabase


class SqliteLeases(OnDatabase):
    async def claim(self, name: str, holder: str, seconds: float) -> bool:
        if seconds <= 0:
            raise ValueError("a lease lasts a positive number of seconds")

        def take(conn: sqlite3.Connection) -> bool:
            now = utc_now()
            at, until = encode_time(now), encode_time(now + dt.timedelta(seconds=seconds))
            # One upsert decides: the row is inserted, or updated only for its holder or once it expired.
            cursor = conn.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at"
                " ELSE excluded.acquired_at END"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.acquired_at",
                (name, holder, at, until),
            )
            return cursor.rowcount == 1

        return await self.database.write(take)

    async def release(self, name: str, holder: str) -> None:
        await self.database.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
