"""Rows <-> records, the part every SQL backend shares: which columns a record has, in which order,
and how serials are written.

The backends differ only in how a time (text in SQLite, timestamptz in PostgreSQL) and a flag (an
integer, a boolean) are written, so each builds one `RowCodec` with its own and keeps the names its
role modules import. Serials are lower-case hex text without leading zeros everywhere: 160 bits fit
neither backend's integers, and a serial prefix search stays an index range scan. Having one
definition also keeps `scepd store copy`, which reads with one codec and writes with the other,
from meeting two column orders.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from scepd.store.base import (
    MAX_SERIAL,
    CertificateRecord,
    CertStatus,
    NotificationKind,
    NotificationRecord,
    PendingRecord,
    PendingStatus,
    RevocationOutcome,
    RevocationRequestRecord,
)


class Row(Protocol):
    """A result row read by column name: sqlite3.Row and psycopg's dict rows both are."""

    def __getitem__(self, key: str, /) -> Any: ...


CERTIFICATE_COLUMNS = (
    "serial, transaction_id, subject, requester, csr_sha256, profile, not_before, not_after,"
    " issued_at, status, der, renewal_of, revoked_at, revocation_reason"
)
PENDING_COLUMNS = (
    "id, transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
    " message_type, renewal_of, received_at, expires_at, status, decided_at, reason, serial"
)
# What a new held request is inserted with; the rest start empty (or at their defaults).
PENDING_INSERT_COLUMNS = (
    "transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
    " message_type, renewal_of, received_at, expires_at, status"
)
NOTIFICATION_COLUMNS = "transaction_id, serial, kind, delivered, detail, at, issuer"
REVOCATION_COLUMNS = "request_context, serial_text, outcome, received_at, uploaded_at"


def aware_utc(when: dt.datetime) -> dt.datetime:
    """`when` in UTC; a naive datetime is refused, since a store would have to guess its zone."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("naive datetime: the store only takes timezone-aware times")
    return when.astimezone(dt.UTC)


def encode_serial(serial: int) -> str:
    if not 0 < serial <= MAX_SERIAL:
        raise ValueError("a serial is a positive integer of at most 160 bits")
    return f"{serial:x}"


def decode_serial(text: str) -> int:
    return int(text, 16)


def _maybe_serial(text: str | None) -> int | None:
    return decode_serial(text) if text is not None else None


@dataclass(frozen=True)
class RowCodec:
    """Every record's row tuple and its reading back, given how this backend writes times and flags."""

    encode_time: Callable[[dt.datetime], Any]
    decode_time: Callable[[Any], dt.datetime]
    encode_flag: Callable[[bool], Any]

    def _maybe_time(self, value: Any) -> dt.datetime | None:
        return self.decode_time(value) if value is not None else None

    def certificate_row(self, record: CertificateRecord) -> tuple[Any, ...]:
        """The values of CERTIFICATE_COLUMNS, in order."""
        return (
            encode_serial(record.serial),
            record.transaction_id,
            record.subject,
            record.requester,
            record.csr_sha256,
            record.profile,
            self.encode_time(record.not_before),
            self.encode_time(record.not_after),
            self.encode_time(record.issued_at),
            CertStatus(record.status).value,
            bytes(record.der),
            encode_serial(record.renewal_of) if record.renewal_of is not None else None,
            self.encode_time(record.revoked_at) if record.revoked_at is not None else None,
            record.revocation_reason,
        )

    def certificate_record(self, row: Row) -> CertificateRecord:
        return CertificateRecord(
            serial=decode_serial(row["serial"]),
            transaction_id=row["transaction_id"],
            subject=row["subject"],
            requester=row["requester"],
            csr_sha256=row["csr_sha256"],
            profile=row["profile"],
            not_before=self.decode_time(row["not_before"]),
            not_after=self.decode_time(row["not_after"]),
            issued_at=self.decode_time(row["issued_at"]),
            status=CertStatus(row["status"]),
            der=bytes(row["der"]),
            renewal_of=_maybe_serial(row["renewal_of"]),
            revoked_at=self._maybe_time(row["revoked_at"]),
            revocation_reason=row["revocation_reason"],
        )

    def pending_insert_row(self, record: PendingRecord) -> tuple[Any, ...]:
        """The values of PENDING_INSERT_COLUMNS for a newly held request (always status pending)."""
        return (
            record.transaction_id,
            record.csr_sha256,
            bytes(record.csr_der),
            bytes(record.signer_der),
            record.subject,
            record.endpoint,
            record.profile,
            record.challenge_mode,
            record.message_type,
            encode_serial(record.renewal_of) if record.renewal_of is not None else None,
            self.encode_time(record.received_at),
            self.encode_time(record.expires_at),
            PendingStatus.PENDING.value,
        )

    def pending_record(self, row: Row) -> PendingRecord:
        return PendingRecord(
            id=int(row["id"]),
            transaction_id=row["transaction_id"],
            csr_sha256=row["csr_sha256"],
            csr_der=bytes(row["csr_der"]),
            signer_der=bytes(row["signer_der"]),
            subject=row["subject"],
            endpoint=row["endpoint"],
            profile=row["profile"],
            challenge_mode=row["challenge_mode"],
            message_type=row["message_type"],
            renewal_of=_maybe_serial(row["renewal_of"]),
            received_at=self.decode_time(row["received_at"]),
            expires_at=self.decode_time(row["expires_at"]),
            status=PendingStatus(row["status"]),
            decided_at=self._maybe_time(row["decided_at"]),
            reason=row["reason"],
            serial=_maybe_serial(row["serial"]),
        )

    def notification_row(self, record: NotificationRecord) -> tuple[Any, ...]:
        """The values of NOTIFICATION_COLUMNS, in order."""
        return (
            record.transaction_id,
            encode_serial(record.serial) if record.serial is not None else None,
            NotificationKind(record.kind).value,
            self.encode_flag(record.delivered),
            record.detail,
            self.encode_time(record.at),
            record.issuer,
        )

    def notification_record(self, row: Row) -> NotificationRecord:
        return NotificationRecord(
            transaction_id=row["transaction_id"],
            serial=_maybe_serial(row["serial"]),
            kind=NotificationKind(row["kind"]),
            delivered=bool(row["delivered"]),
            detail=row["detail"],
            at=self.decode_time(row["at"]),
            issuer=row["issuer"],
        )

    def revocation_record(self, row: Row) -> RevocationRequestRecord:
        return RevocationRequestRecord(
            request_context=row["request_context"],
            serial_text=row["serial_text"],
            outcome=RevocationOutcome(row["outcome"]),
            received_at=self.decode_time(row["received_at"]),
            uploaded_at=self._maybe_time(row["uploaded_at"]),
        )
