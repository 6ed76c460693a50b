"""`IntuneLedger` on SQLite: notifications sent and revocation requests received."""

from __future__ import annotations

import datetime as dt
import sqlite3

from cryptography import x509

from scepd.store.base import MAX_SERIAL, NotificationRecord, RevocationOutcome, RevocationRequestRecord
from scepd.store.sqlite.codecs import (
    NOTIFICATION_COLUMNS,
    encode_serial,
    encode_time,
    notification_record,
    notification_row,
    revocation_record,
)
from scepd.store.sqlite.connection import OnDatabase, transaction


class SqliteIntuneLedger(OnDatabase):
    async def record_notification(self, record: NotificationRecord) -> None:
        row = notification_row(record)
        await self.database.execute(
            f"INSERT INTO intune_notifications ({NOTIFICATION_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row
        )

    async def notified_issuers(self) -> list[str]:
        def names(conn: sqlite3.Connection) -> list[str]:
            # Success notifications recorded before the issuer column existed: the name sent was
            # the certificate's issuer, so read it from the certificate once and keep it.
            old = conn.execute(
                "SELECT n.id, c.der FROM intune_notifications n JOIN certificates c ON c.serial = n.serial"
                " WHERE n.kind = 'success' AND n.issuer IS NULL"
            ).fetchall()
            if old:

                def fill(c: sqlite3.Connection) -> None:
                    c.executemany(
                        "UPDATE intune_notifications SET issuer = ? WHERE id = ?",
                        [(x509.load_der_x509_certificate(bytes(der)).issuer.rfc4514_string(), id_) for id_, der in old],
                    )

                transaction(conn, fill)
            rows = conn.execute(
                "SELECT DISTINCT issuer FROM intune_notifications WHERE kind = 'success' AND issuer IS NOT NULL"
            ).fetchall()
            return sorted(row[0] for row in rows)

        return await self.database.run(names)

    async def notifications(self, transaction_id: str | None = None, limit: int = 100) -> list[NotificationRecord]:
        where, args = (
            ("", (limit,)) if transaction_id is None else ("WHERE transaction_id = ?", (transaction_id, limit))
        )
        query = f"SELECT {NOTIFICATION_COLUMNS} FROM intune_notifications {where} ORDER BY id DESC LIMIT ?"
        rows = await self.database.run(lambda conn: conn.execute(query, args).fetchall())
        return [notification_record(row) for row in rows]

    async def apply_revocation_request(
        self, request_context: str, serial_text: str, serial: int | None, reason: str, when: dt.datetime
    ) -> tuple[RevocationRequestRecord, bool]:
        at = encode_time(when)

        def apply(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            seen = conn.execute(
                "SELECT * FROM intune_revocations WHERE request_context = ?", (request_context,)
            ).fetchone()
            if seen is not None:
                return seen, False
            outcome = RevocationOutcome.NOT_FOUND
            if serial is not None and 0 < serial <= MAX_SERIAL:
                changed = conn.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?"
                    " WHERE serial = ? AND status != 'revoked'",
                    (at, reason, encode_serial(serial)),
                ).rowcount
                if changed:
                    outcome = RevocationOutcome.REVOKED
                elif conn.execute("SELECT 1 FROM certificates WHERE serial = ?", (encode_serial(serial),)).fetchone():
                    outcome = RevocationOutcome.ALREADY_REVOKED
            conn.execute(
                "INSERT INTO intune_revocations (request_context, serial_text, outcome, received_at)"
                " VALUES (?, ?, ?, ?)",
                (request_context, serial_text, outcome.value, at),
            )
            row: sqlite3.Row = conn.execute(
                "SELECT * FROM intune_revocations WHERE request_context = ?", (request_context,)
            ).fetchone()
            return row, True

        row, created = await self.database.write(apply)
        return revocation_record(row), created

    async def unuploaded_revocation_requests(self) -> list[RevocationRequestRecord]:
        rows = await self.database.run(
            lambda conn: conn.execute(
                "SELECT * FROM intune_revocations WHERE uploaded_at IS NULL ORDER BY received_at, request_context"
            ).fetchall()
        )
        return [revocation_record(row) for row in rows]

    async def mark_revocation_uploaded(self, request_contexts: list[str], when: dt.datetime) -> None:
        at = encode_time(when)

        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE intune_revocations SET uploaded_at = ? WHERE request_context = ?",
                [(at, context) for context in request_contexts],
            )

        await self.database.write(mark)
