"""`CrlState` on PostgreSQL: revoked rows from their own index, the CRL number, the last CRL signed."""

from __future__ import annotations

import datetime as dt

from scepd.store.base import RevocationState, RevokedEntry
from scepd.store.postgres.codecs import decode_serial, decode_time, encode_time
from scepd.store.postgres.connection import Conn, OnDatabase

_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


class PostgresCrlState(OnDatabase):
    async def revoked_entries(self, *, valid_after: dt.datetime | None = None) -> list[RevokedEntry]:
        since = encode_time(valid_after) if valid_after is not None else _EPOCH

        def read(conn: Conn) -> list[RevokedEntry]:
            # Converted in the thread too: 200,000 rows are most of a second of Python.
            rows = conn.execute(
                "SELECT serial, revoked_at, revocation_reason FROM certificates"
                " WHERE status = 'revoked' AND not_after > %s ORDER BY revoked_at, serial",
                (since,),
            ).fetchall()
            return [
                RevokedEntry(decode_serial(r["serial"]), decode_time(r["revoked_at"]), r["revocation_reason"])
                for r in rows
            ]

        return await self.database.run(read)

    async def revocation_state(self) -> RevocationState:
        row = await self.database.run(
            lambda conn: conn.execute(
                "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM certificate_counts WHERE status = 'revoked') AS n,"
                " (SELECT max(revoked_at) FROM certificates WHERE status = 'revoked') AS latest"
            ).fetchone()
        )
        assert row is not None  # a SELECT without FROM always has its row
        return RevocationState(int(row["n"]), decode_time(row["latest"]) if row["latest"] is not None else None)

    async def next_crl_number(self) -> int:
        def bump(conn: Conn) -> int:
            # The row lock orders every node's bump; the number is as durable as the commit.
            row = conn.execute("UPDATE crl_state SET number = number + 1 WHERE id = 1 RETURNING number").fetchone()
            assert row is not None  # migration 1 inserted the row
            return int(row["number"])

        return await self.database.write(bump)

    async def save_crl(self, number: int, der: bytes) -> None:
        # A slower node never replaces a newer CRL with an older one.
        await self.database.execute(
            "INSERT INTO crl_current (id, number, der) VALUES (1, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der"
            " WHERE excluded.number > crl_current.number",
            (number, bytes(der)),
        )

    async def latest_crl(self) -> bytes | None:
        row = await self.database.run(lambda conn: conn.execute("SELECT der FROM crl_current WHERE id = 1").fetchone())
        return bytes(row["der"]) if row is not None else None
