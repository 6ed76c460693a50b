"""`PendingRequests` on PostgreSQL: the pending_requests table is the approval queue."""

from __future__ import annotations

import datetime as dt

from psycopg.rows import DictRow

from scepd.store.base import PendingRecord, PendingStatus
from scepd.store.postgres.codecs import (
    PENDING_COLUMNS,
    PENDING_INSERT_COLUMNS,
    encode_serial,
    encode_time,
    pending_insert_row,
    pending_record,
    placeholders,
)
from scepd.store.postgres.connection import Conn, OnDatabase


class PostgresPendingRequests(OnDatabase):
    async def hold_request(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        row = pending_insert_row(record)

        def hold(conn: Conn) -> tuple[DictRow, bool]:
            # A resend on another node at the same time: its INSERT waits for this one's commit,
            # then does nothing, and its SELECT (a new snapshot under READ COMMITTED) finds this row.
            new = (
                conn.execute(
                    f"INSERT INTO pending_requests ({PENDING_INSERT_COLUMNS}) VALUES ({placeholders(row)})"
                    " ON CONFLICT (transaction_id, csr_sha256) DO NOTHING",
                    row,
                ).rowcount
                == 1
            )
            held = conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE transaction_id = %s AND csr_sha256 = %s",
                (record.transaction_id, record.csr_sha256),
            ).fetchone()
            assert held is not None  # inserted now, or by the committed request it conflicted with
            return held, new

        held, new = await self.database.write(hold)
        return pending_record(held), new

    async def find_pending(self, transaction_id: str, csr_sha256: str | None = None) -> PendingRecord | None:
        where, args = "transaction_id = %s", [transaction_id]
        if csr_sha256 is not None:
            where, args = where + " AND csr_sha256 = %s", [transaction_id, csr_sha256]
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE {where} ORDER BY id DESC LIMIT 1"
        row = await self.database.run(lambda conn: conn.execute(query, args).fetchone())
        return pending_record(row) if row is not None else None

    async def get_pending(self, request_id: int) -> PendingRecord | None:
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE id = %s"
        row = await self.database.run(lambda conn: conn.execute(query, (request_id,)).fetchone())
        return pending_record(row) if row is not None else None

    async def list_pending(self, status: PendingStatus | None = None, limit: int = 100) -> list[PendingRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, args = ("", (limit,)) if status is None else ("WHERE status = %s", (PendingStatus(status).value, limit))
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests {where} ORDER BY id DESC LIMIT %s"
        rows = await self.database.run(lambda conn: conn.execute(query, args).fetchall())
        return [pending_record(row) for row in rows]

    async def decide_pending(
        self, request_id: int, approve: bool, reason: str, now: dt.datetime
    ) -> PendingRecord | None:
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        at = encode_time(now)
        # One UPDATE decides, so two operators (or an operator and the expiry) on any nodes cannot both win.
        row = await self.database.write(
            lambda conn: conn.execute(
                f"UPDATE pending_requests SET status = %s, decided_at = %s, reason = %s"
                f" WHERE id = %s AND status = 'pending' AND expires_at > %s RETURNING {PENDING_COLUMNS}",
                (status.value, at, reason, request_id, at),
            ).fetchone()
        )
        return pending_record(row) if row is not None else None

    async def mark_pending_issued(self, request_id: int, serial: int) -> None:
        await self.database.execute(
            "UPDATE pending_requests SET status = 'issued', serial = %s"
            " WHERE id = %s AND status IN ('approved', 'issued')",
            (encode_serial(serial), request_id),
        )

    async def expire_pending(self, now: dt.datetime) -> int:
        at = encode_time(now)
        return await self.database.execute(
            "UPDATE pending_requests SET status = 'expired', decided_at = %s"
            " WHERE status = 'pending' AND expires_at <= %s",
            (at, at),
        )
