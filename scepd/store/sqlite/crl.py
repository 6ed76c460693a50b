"""`CrlState` on SQLite: revoked rows from their own index, the CRL number, the last CRL signed."""

from __future__ import annotations

import datetime as dt
import sqlite3

from scepd.store.base import RevocationState, RevokedEntry
from scepd.store.sqlite.codecs import decode_serial, decode_time, encode_time
from scepd.store.sqlite.connection import OnDatabase


class SqliteCrlState(OnDatabase):
    async def revoked_entries(self, *, valid_after: dt.datetime | None = None) -> list[RevokedEntry]:
        # `not_after > ''` holds for every row: one statement, one index (certificates_revoked).
        since = encode_time(valid_after) if valid_after is not None else ""

        def read(conn: sqlite3.Connection) -> list[RevokedEntry]:
            # Converted in the thread too: 200,000 rows are most of a second of Python.
            cursor = conn.execute(
                "SELECT serial, revoked_at, revocation_reason FROM certificates INDEXED BY certificates_revoked"
                " WHERE status = 'revoked' AND not_after > ? ORDER BY revoked_at, serial",
                (since,),
            )
            return [RevokedEntry(decode_serial(serial), decode_time(at), reason) for serial, at, reason in cursor]

        return await self.database.run(read)

    async def revocation_state(self) -> RevocationState:
        row = await self.database.run(
            lambda conn: conn.execute(
                "SELECT (SELECT coalesce(max(n), 0) FROM certificate_counts WHERE status = 'revoked'),"
                " (SELECT max(revoked_at) FROM certificates INDEXED BY certificates_revoked WHERE status = 'revoked')"
            ).fetchone()
        )
        return RevocationState(row[0], decode_time(row[1]) if row[1] is not None else None)

    async def next_crl_number(self) -> int:
        def bump(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO crl_state (id, number) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET number = number + 1"
            )
            number: int = conn.execute("SELECT number FROM crl_state WHERE id = 1").fetchone()[0]
            return number

        return await self.database.write(bump)

    async def save_crl(self, number: int, der: bytes) -> None:
        # A slower writer never replaces a newer CRL with an older one.
        await self.database.execute(
            "INSERT INTO crl_current (id, number, der) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der"
            " WHERE excluded.number > crl_current.number",
            (number, bytes(der)),
        )

    async def latest_crl(self) -> bytes | None:
        row = await self.database.run(lambda conn: conn.execute("SELECT der FROM crl_current WHERE id = 1").fetchone())
        return bytes(row[0]) if row is not None else None
