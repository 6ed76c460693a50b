"""`Counts` on PostgreSQL: the numbers a scrape shows, read together on the read-only connection."""

from __future__ import annotations

import datetime as dt

from scepd.store.base import CertStatus, StoreCounts
from scepd.store.postgres.codecs import encode_time
from scepd.store.postgres.connection import Conn, OnDatabase


class PostgresCounts(OnDatabase):
    async def counts(self, now: dt.datetime) -> StoreCounts:
        at = encode_time(now)

        def read(conn: Conn) -> tuple[dict[str, int], int]:
            # certificate_counts is kept by triggers, a few rows per status: no scan of a million rows.
            row = conn.execute(
                "SELECT (SELECT coalesce(json_object_agg(status, n), '{}') FROM"
                "   (SELECT status, sum(n)::bigint AS n FROM certificate_counts GROUP BY status) s) AS by_status,"
                " (SELECT count(*) FROM pending_requests WHERE status = 'pending' AND expires_at > %s) AS pending",
                (at,),
            ).fetchone()
            assert row is not None  # a SELECT without FROM always has its row
            return {str(k): int(v) for k, v in row["by_status"].items()}, int(row["pending"])

        by_status, pending = await self.database.read(read)
        certificates = {status.value: 0 for status in CertStatus}
        certificates.update(by_status)
        return StoreCounts(certificates, pending)
