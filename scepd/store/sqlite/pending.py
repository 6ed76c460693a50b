"""`PendingRequests` on SQLite: the pending_requests table is the approval queue."""

from __future__ import annotations

import datetime as dt
import sqlite3

from scepd.store.base import PendingRecord, PendingStatus
from scepd.store.sqlite.codecs import (
    PENDING_COLUMNS,
    PENDING_INSERT_COLUMNS,
    encode_serial,
    encode_time,
    pending_insert_row,
    pending_record,
)
from scepd.store.sqlite.connection import OnDatabase


class SqlitePendingRequests(OnDatabase):
    async def hold_request(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        row = pending_insert_row(record)

        def hold(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            new = (
                conn.execute(
                    f"INSERT INTO pending_requests ({PENDING_INSERT_COLUMNS}) VALUES ({', '.join('?' * len(row))})"
                    " ON CONFLICT (transaction_id, csr_sha256) DO NOTHING",
                    row,
                ).rowcount
                == 1
            )
            held: sqlite3.Row = conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE transaction_id = ? AND csr_sha256 = ?",
                (record.transaction_id, record.csr_sha256),
            ).fetchone()
            return held, new

        held, new = await self.database.write(hold)
        return pending_record(held), new

    async def find_pending(self, transaction_id: str, csr_sha256: str | None = None) -> PendingRecord | None:
        where, args = "transaction_id = ?", [transaction_id]
        if csr_sha256 is not None:
            where, args = where + " AND csr_sha256 = ?", [transaction_id, csr_sha256]
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE {where} ORDER BY id DESC LIMIT 1"
        row = await self.database.run(lambda conn: conn.execute(query, args).fetchone())
        return pending_record(row) if row is not None else None

    async def get_pending(self, request_id: int) -> PendingRecord | None:
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE id = ?"
        row = await self.database.run(lambda conn: conn.execute(query, (request_id,)).fetchone())
        return pending_record(row) if row is not None else None

    async def list_pending(self, status: PendingStatus | None = None, limit: int = 100) -> list[PendingRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, args = ("", (limit,)) if status is None else ("WHERE status = ?", (PendingStatus(status).value, limit))
        query = f"SELECT {PENDING_COLUMNS} FROM pending_requests {where} ORDER BY id DESC LIMIT ?"
        rows = await self.database.run(lambda conn: conn.execute(query, args).fetchall())
        return [pending_record(row) for row in rows]

    async def decide_pending(
        self, request_id: int, approve: bool, reason: str, now: dt.datetime
    ) -> PendingRecord | None:
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        at = encode_time(now)

        def decide(conn: sqlite3.Connection) -> sqlite3.Row | None:
            # One UPDATE decides, so two operators (or an operator and the expiry) cannot both win.
            changed = conn.execute(
                "UPDATE pending_requests SET status = ?, decided_at = ?, reason = ?"
                " WHERE id = ? AND status = 'pending' AND expires_at > ?",
                (status.value, at, reason, request_id, at),
            ).rowcount
            if changed != 1:
                return None
            row: sqlite3.Row = conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_requests WHERE id = ?", (request_id,)
            ).fetchone()
            return row

        row = await self.database.write(decide)
        return pending_record(row) if row is not None else None

    async def mark_pending_issued(self, request_id: int, serial: int) -> None:
        await self.database.execute(
            "UPDATE pending_requests SET status = 'issued', serial = ?"
            " WHERE id = ? AND status IN ('approved', 'issued')",
            (encode_serial(serial), request_id),
        )

    async def expire_pending(self, now: dt.datetime) -> int:
        at = encode_time(now)
        return await self.database.execute(
            "UPDATE pending_requests SET status = 'expired', decided_at = ?"
            " WHERE status = 'pending' AND expires_at <= ?",
            (at, at),
        )
