"""`NodeKeys` on SQLite: one row per node name (an SQLite store has one node, so only tests use it)."""

from __future__ import annotations

import datetime as dt

from scepd.store.base import NodeKeysRecord
from scepd.store.sqlite.codecs import decode_time, encode_time
from scepd.store.sqlite.connection import OnDatabase


class SqliteNodeKeys(OnDatabase):
    async def announce(self, node: str, fingerprint: str, now: dt.datetime) -> None:
        await self.database.execute(
            "INSERT INTO node_keys (node, fingerprint, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (node) DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = excluded.seen_at",
            (node, fingerprint, encode_time(now)),
        )

    async def fingerprints(self, since: dt.datetime) -> list[NodeKeysRecord]:
        rows = await self.database.run(
            lambda conn: conn.execute(
                "SELECT node, fingerprint, seen_at FROM node_keys WHERE seen_at >= ? ORDER BY node",
                (encode_time(since),),
            ).fetchall()
        )
        return [NodeKeysRecord(node, fingerprint, decode_time(seen)) for node, fingerprint, seen in rows]
