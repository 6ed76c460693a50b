"""`IntuneLedger` on PostgreSQL: notifications sent and revocation requests received."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from psycopg.rows import DictRow

from scepd.store.base import MAX_SERIAL, NotificationRecord, RevocationOutcome, RevocationRequestRecord
from scepd.store.postgres.codecs import (
    NOTIFICATION_COLUMNS,
    REVOCATION_COLUMNS,
    encode_serial,
    encode_time,
    notification_record,
    notification_row,
    placeholders,
    revocation_record,
)
from scepd.store.postgres.connection import Conn, OnDatabase


class PostgresIntuneLedger(OnDatabase):
    async def record_notification(self, record: NotificationRecord) -> None:
        row = notification_row(record)
        await self.database.execute(
            f"INSERT INTO intune_notifications ({NOTIFICATION_COLUMNS}) VALUES ({placeholders(row)})", row
        )

    async def notified_issuers(self) -> list[str]:
        # A success notification recorded without its issuer (none are, today; kept for parity with the
        # SQLite store, whose older rows lack it): the certificate's issuer was sent. Filled in by a write
        # only when there is one, so this read alone never counts as a commit (a read-only standby
        # answers SELECTs, and must not end a fault episode).
        old = await self.database.run(
            lambda conn: conn.execute(
                "SELECT n.id, c.der FROM intune_notifications n JOIN certificates c ON c.serial = n.serial"
                " WHERE n.kind = 'success' AND n.issuer IS NULL"
            ).fetchall()
        )
        if old:
            filled = [(x509.load_der_x509_certificate(bytes(r["der"])).issuer.rfc4514_string(), r["id"]) for r in old]

            def fill(conn: Conn) -> None:
                for issuer, row_id in filled:
                    conn.execute(
                        "UPDATE intune_notifications SET issuer = %s WHERE id = %s AND issuer IS NULL", (issuer, row_id)
                    )

            await self.database.write(fill)
        rows = await self.database.run(
            lambda conn: conn.execute(
                "SELECT DISTINCT issuer FROM intune_notifications WHERE kind = 'success' AND issuer IS NOT NULL"
            ).fetchall()
        )
        return sorted(row["issuer"] for row in rows)

    async def notifications(self, transaction_id: str | None = None, limit: int = 100) -> list[NotificationRecord]:
        where, args = (
            ("", (limit,)) if transaction_id is None else ("WHERE transaction_id = %s", (transaction_id, limit))
        )
        query = f"SELECT {NOTIFICATION_COLUMNS} FROM intune_notifications {where} ORDER BY id DESC LIMIT %s"
        rows = await self.database.run(lambda conn: conn.execute(query, args).fetchall())
        return [notification_record(row) for row in rows]

    async def apply_revocation_request(
        self, request_context: str, serial_text: str, serial: int | None, reason: str, when: dt.datetime
    ) -> tuple[RevocationRequestRecord, bool]:
        at = encode_time(when)

        def apply(conn: Conn) -> tuple[DictRow, bool]:
            # Claim the request first: a second node inserting the same context waits for this
            # transaction, then inserts nothing and reads the outcome this one recorded.
            claimed = conn.execute(
                "INSERT INTO intune_revocations (request_context, serial_text, outcome, received_at)"
                " VALUES (%s, %s, 'not_found', %s) ON CONFLICT (request_context) DO NOTHING",
                (request_context, serial_text, at),
            ).rowcount
            if not claimed:
                seen = conn.execute(
                    f"SELECT {REVOCATION_COLUMNS} FROM intune_revocations WHERE request_context = %s",
                    (request_context,),
                ).fetchone()
                assert seen is not None  # the conflicting row is committed, and never deleted
                return seen, False
            outcome = RevocationOutcome.NOT_FOUND
            if serial is not None and 0 < serial <= MAX_SERIAL:
                changed = conn.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at = %s, revocation_reason = %s"
                    " WHERE serial = %s AND status != 'revoked'",
                    (at, reason, encode_serial(serial)),
                ).rowcount
                if changed:
                    outcome = RevocationOutcome.REVOKED
                elif conn.execute("SELECT 1 FROM certificates WHERE serial = %s", (encode_serial(serial),)).fetchone():
                    outcome = RevocationOutcome.ALREADY_REVOKED
            row = conn.execute(
                f"UPDATE intune_revocations SET outcome = %s WHERE request_context = %s RETURNING {REVOCATION_COLUMNS}",
                (outcome.value, request_context),
            ).fetchone()
            assert row is not None  # inserted above, in this transaction
            return row, True

        row, created = await self.database.write(apply)
        return revocation_record(row), created

    async def unuploaded_revocation_requests(self) -> list[RevocationRequestRecord]:
        rows = await self.database.run(
            lambda conn: conn.execute(
                f"SELECT {REVOCATION_COLUMNS} FROM intune_revocations WHERE uploaded_at IS NULL"
                " ORDER BY received_at, request_context"
            ).fetchall()
        )
        return [revocation_record(row) for row in rows]

    async def mark_revocation_uploaded(self, request_contexts: list[str], when: dt.datetime) -> None:
        at = encode_time(when)
        await self.database.execute(
            "UPDATE intune_revocations SET uploaded_at = %s WHERE request_context = ANY(%s)",
            (at, list(request_contexts)),
        )
