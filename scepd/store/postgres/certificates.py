"""`IssuedCertificates` on PostgreSQL: the certificates table (its counts are kept by triggers)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg
from psycopg.rows import DictRow

from scepd.store.base import MAX_SERIAL, CertificateRecord, CertStatus, SerialCollision
from scepd.store.postgres.codecs import (
    CERTIFICATE_COLUMNS,
    certificate_record,
    certificate_row,
    encode_serial,
    encode_time,
    placeholders,
)
from scepd.store.postgres.connection import Conn, Link, OnDatabase, transaction

_HEX = re.compile(r"[0-9a-f]+")
_SERIAL_KEY = "certificates_serial_key"  # the UNIQUE constraint's name, as PostgreSQL makes it


def _issued_for_request(conn: Conn, transaction_id: str, csr_sha256: str) -> DictRow | None:
    """The latest certificate issued for this transactionID and CSR."""
    return conn.execute(
        f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE transaction_id = %s AND csr_sha256 = %s"
        " ORDER BY id DESC LIMIT 1",
        (transaction_id, csr_sha256),
    ).fetchone()


class PostgresCertificates(OnDatabase):
    async def put_issued(self, record: CertificateRecord, *, once: bool = False) -> CertificateRecord | None:
        row = certificate_row(record)
        sql = f"INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES ({placeholders(row)})"

        def put(conn: Conn) -> DictRow | None:
            if once:
                # Two nodes issuing for the same request: the second waits here for the first to
                # commit, then finds its certificate (READ COMMITTED reads anew per statement).
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{record.transaction_id}\n{record.csr_sha256}",),
                )
                if (earlier := _issued_for_request(conn, record.transaction_id, record.csr_sha256)) is not None:
                    return earlier
            conn.execute(sql, row)
            return None

        def insert(link: Link) -> DictRow | None | bool:
            try:
                return transaction(link, put)
            except psycopg.errors.UniqueViolation as e:
                if e.diag.constraint_name == _SERIAL_KEY:
                    return False
                raise

        result = await self.database.call(insert, committed=lambda r: r is None)
        if result is False:
            raise SerialCollision(record.serial)
        return certificate_record(result) if isinstance(result, dict) else None

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        row = await self.database.run(lambda conn: _issued_for_request(conn, transaction_id, csr_sha256))
        return certificate_record(row) if row is not None else None

    async def latest_for_transaction(self, transaction_id: str) -> CertificateRecord | None:
        row = await self.database.run(
            lambda conn: conn.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE transaction_id = %s ORDER BY id DESC LIMIT 1",
                (transaction_id,),
            ).fetchone()
        )
        return certificate_record(row) if row is not None else None

    async def get(self, serial: int) -> CertificateRecord | None:
        if not 0 < serial <= MAX_SERIAL:
            return None  # a client may ask for any serial; none outside the range exists
        row = await self.database.run(
            lambda conn: conn.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = %s", (encode_serial(serial),)
            ).fetchone()
        )
        return certificate_record(row) if row is not None else None

    async def mark_superseded(self, serial: int) -> bool:
        changed = await self.database.execute(
            "UPDATE certificates SET status = 'superseded' WHERE serial = %s AND status = 'valid'",
            (encode_serial(serial),),
        )
        return changed == 1

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        changed = await self.database.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = %s, revocation_reason = %s"
            " WHERE serial = %s AND status != 'revoked'",
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
            clauses.append("status = %s")
            args.append(CertStatus(status).value)
        if search:
            # Subject or requester text (case-insensitive, wildcards literal), a whole
            # transaction ID, or the start of a hexadecimal serial.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"
            alternatives = ["subject ILIKE %s", "requester ILIKE %s", "transaction_id = %s"]
            args += [pattern, pattern, search]
            serial = search.lower().removeprefix("0x").replace(":", "")
            if serial and _HEX.fullmatch(serial):
                alternatives.append("serial LIKE %s")
                args.append(serial + "%")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        query = f"SELECT {CERTIFICATE_COLUMNS} FROM certificates {where} ORDER BY id DESC LIMIT %s"
        rows = await self.database.run(lambda conn: conn.execute(query, [*args, limit]).fetchall())
        return [certificate_record(row) for row in rows]
