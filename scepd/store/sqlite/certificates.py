"""`IssuedCertificates` on SQLite: the certificates table and its per-status counts."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from typing import Any

from scepd.store.base import MAX_SERIAL, CertificateRecord, CertStatus, SerialCollision
from scepd.store.sqlite.codecs import (
    CERTIFICATE_COLUMNS,
    certificate_record,
    certificate_row,
    encode_serial,
    encode_time,
)
from scepd.store.sqlite.connection import OnDatabase, transaction

_HEX = re.compile(r"[0-9a-f]+")


def _issued_for_request(conn: sqlite3.Connection, transaction_id: str, csr_sha256: str) -> sqlite3.Row | None:
    """The latest certificate issued for this transactionID and CSR."""
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE transaction_id = ? AND csr_sha256 = ?"
        " ORDER BY id DESC LIMIT 1",
        (transaction_id, csr_sha256),
    ).fetchone()
    return row


class SqliteCertificates(OnDatabase):
    async def put_issued(self, record: CertificateRecord, *, once: bool = False) -> CertificateRecord | None:
        row = certificate_row(record)
        sql = f"INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES ({', '.join('?' * len(row))})"

        def put(conn: sqlite3.Connection) -> sqlite3.Row | None:
            if once and (earlier := _issued_for_request(conn, record.transaction_id, record.csr_sha256)):
                return earlier
            conn.execute(sql, row)
            return None

        def insert(conn: sqlite3.Connection) -> sqlite3.Row | None | bool:
            try:
                return transaction(conn, put)
            except sqlite3.IntegrityError as e:
                if "certificates.serial" in str(e) and "UNIQUE" in str(e):
                    return False
                raise

        result = await self.database.run(insert)
        if result is False:
            raise SerialCollision(record.serial)
        return certificate_record(result) if isinstance(result, sqlite3.Row) else None

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        row = await self.database.run(lambda conn: _issued_for_request(conn, transaction_id, csr_sha256))
        return certificate_record(row) if row is not None else None

    async def latest_for_transaction(self, transaction_id: str) -> CertificateRecord | None:
        def latest(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE transaction_id = ? ORDER BY id DESC LIMIT 1",
                (transaction_id,),
            ).fetchone()
            return row

        row = await self.database.run(latest)
        return certificate_record(row) if row is not None else None

    async def get(self, serial: int) -> CertificateRecord | None:
        if not 0 < serial <= MAX_SERIAL:
            return None  # a client may ask for any serial; none outside the range exists

        def get(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?", (encode_serial(serial),)
            ).fetchone()
            return row

        row = await self.database.run(get)
        return certificate_record(row) if row is not None else None

    async def mark_superseded(self, serial: int) -> bool:
        changed = await self.database.execute(
            "UPDATE certificates SET status = 'superseded' WHERE serial = ? AND status = 'valid'",
            (encode_serial(serial),),
        )
        return changed == 1

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        changed = await self.database.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?"
            " WHERE serial = ? AND status != 'revoked'",
            (encode_time(when), reason, encode_serial(serial)),
        )
        return changed == 1

    async def list_certificates(
        self, status: CertStatus | None = None, limit: int = 100, search: str | None = None
    ) -> list[CertificateRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            args.append(CertStatus(status).value)
        if search:
            # Subject or requester text (case-insensitive, wildcards literal), a whole
            # transaction ID, or the start of a hexadecimal serial.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"
            alternatives = ["subject LIKE ? ESCAPE '\\'", "requester LIKE ? ESCAPE '\\'", "transaction_id = ?"]
            args += [pattern, pattern, search]
            serial = search.lower().removeprefix("0x").replace(":", "")
            if serial and _HEX.fullmatch(serial):
                alternatives.append("serial LIKE ?")
                args.append(serial + "%")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = f"SELECT {CERTIFICATE_COLUMNS} FROM certificates {where} ORDER BY id DESC LIMIT ?"
        rows = await self.database.run(lambda conn: conn.execute(query, [*args, limit]).fetchall())
        return [certificate_record(row) for row in rows]
