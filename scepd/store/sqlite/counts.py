"""`Counts` on SQLite: the numbers a scrape shows, read together on the read-only connection."""

from __future__ import annotations

import datetime as dt
import sqlite3

from scepd.store.base import CertStatus, StoreCounts
from scepd.store.sqlite.codecs import encode_time
from scepd.store.sqlite.connection import OnDatabase


class SqliteCounts(OnDatabase):
    async def counts(self, now: dt.datetime) -> StoreCounts:
        at = encode_time(now)

        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], int]:
            # certificate_counts is kept by triggers (migration 5): no scan of a million rows.
            by_status = conn.execute("SELECT status, n FROM certificate_counts").fetchall()
            pending = conn.execute(
                "SELECT count(*) FROM pending_requests WHERE status = 'pending' AND expires_at > ?", (at,)
            ).fetchone()
            return by_status, int(pending[0])

        # One worker-thread call, not one per number: under load every hop waits for the scheduler.
        rows, pending = await self.database.read(read)
        certificates = {status.value: 0 for status in CertStatus}
        certificates.update({row[0]: row[1] for row in rows})
        return StoreCounts(certificates, pending)
