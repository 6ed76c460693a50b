"""`NodeKeys` on PostgreSQL: one row per node name, how nodes sharing the database compare their keys."""

from __future__ import annotations

import datetime as dt

from scepd.store.base import NodeKeysRecord
from scepd.store.postgres.codecs import decode_time, encode_time
from scepd.store.postgres.connection import OnDatabase


class PostgresNodeKeys(OnDatabase):
    async def announce(self, node: str, fingerprint: str, now: dt.datetime) -> None:
        await self.database.execute(
            "INSERT INTO node_keys (node, fingerprint, seen_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (node) DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = excluded.seen_at",
            (node, fingerprint, encode_time(now)),
        )

    async def fingerprints(self, since: dt.datetime) -> list[NodeKeysRecord]:
        # The read-only connection: a comparison never waits behind this process's writes.
        rows = await self.database.read(
            lambda conn: conn.execute(
                "SELECT node, fingerprint, seen_at FROM node_keys WHERE seen_at >= %s ORDER BY node",
                (encode_time(since),),
            ).fetchall()
        )
        return [NodeKeysRecord(r["node"], r["fingerprint"], decode_time(r["seen_at"])) for r in rows]
