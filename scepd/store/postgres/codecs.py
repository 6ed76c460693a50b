"""Rows <-> records: how the PostgreSQL store writes times, serials and each record type.

Times are timestamptz (microseconds, like Python's datetime), handed over as
aware datetimes and read back in UTC. Serials are lower-case hex text without
leading zeros, as in the SQLite store: 160 bits do not fit a bigint, and hex
text keeps the serial prefix search an index range scan. Every column list
and row tuple of a record lives here, so the role modules only write SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg.rows import DictRow

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


def encode_time(when: dt.datetime) -> dt.datetime:
    """The same instant in UTC; naive datetimes are refused (the server would guess their zone)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("naive datetime: the store only takes timezone-aware times")
    return when.astimezone(dt.UTC)


def decode_time(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def encode_serial(serial: int) -> str:
    if not 0 < serial <= MAX_SERIAL:
        raise ValueError("a serial is a positive integer of at most 160 bits")
    return f"{serial:x}"


def decode_serial(text: str) -> int:
    return int(text, 16)


def _maybe_time(value: dt.datetime | None) -> dt.datetime | None:
    return decode_time(value) if value is not None else None


def _maybe_serial(text: str | None) -> int | None:
    return decode_serial(text) if text is not None else None


def placeholders(row: tuple[Any, ...]) -> str:
    return ", ".join(["%s"] * len(row))


# -- certificates ----------------------------------------------------------------

CERTIFICATE_COLUMNS = (
    "serial, transaction_id, subject, requester, csr_sha256, profile, not_before, not_after,"
    " issued_at, status, der, renewal_of, revoked_at, revocation_reason"
)


def certificate_row(record: CertificateRecord) -> tuple[Any, ...]:
    """The values of CERTIFICATE_COLUMNS, in order."""
    return (
        encode_serial(record.serial),
        record.transaction_id,
        record.subject,
        record.requester,
        record.csr_sha256,
        record.profile,
        encode_time(record.not_before),
        encode_time(record.not_after),
        encode_time(record.issued_at),
        CertStatus(record.status).value,
        bytes(record.der),
        encode_serial(record.renewal_of) if record.renewal_of is not None else None,
        encode_time(record.revoked_at) if record.revoked_at is not None else None,
        record.revocation_reason,
    )


def certificate_record(row: DictRow) -> CertificateRecord:
    return CertificateRecord(
        serial=decode_serial(row["serial"]),
        transaction_id=row["transaction_id"],
        subject=row["subject"],
        requester=row["requester"],
        csr_sha256=row["csr_sha256"],
        profile=row["profile"],
        not_before=decode_time(row["not_before"]),
        not_after=decode_time(row["not_after"]),
        issued_at=decode_time(row["issued_at"]),
        status=CertStatus(row["status"]),
        der=bytes(row["der"]),
        renewal_of=_maybe_serial(row["renewal_of"]),
        revoked_at=_maybe_time(row["revoked_at"]),
        revocation_reason=row["revocation_reason"],
    )


# -- requests held for approval ------------------------------------------------------

PENDING_COLUMNS = (
    "id, transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
    " message_type, renewal_of, received_at, expires_at, status, decided_at, reason, serial"
)
# What a new held request is inserted with; the rest start empty (or at their defaults).
PENDING_INSERT_COLUMNS = (
    "transaction_id, csr_sha256, csr_der, signer_der, subject, endpoint, profile, challenge_mode,"
    " message_type, renewal_of, received_at, expires_at, status"
)


def pending_insert_row(record: PendingRecord) -> tuple[Any, ...]:
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
        encode_time(record.received_at),
        encode_time(record.expires_at),
        PendingStatus.PENDING.value,
    )


def pending_record(row: DictRow) -> PendingRecord:
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
        received_at=decode_time(row["received_at"]),
        expires_at=decode_time(row["expires_at"]),
        status=PendingStatus(row["status"]),
        decided_at=_maybe_time(row["decided_at"]),
        reason=row["reason"],
        serial=_maybe_serial(row["serial"]),
    )


# -- the Intune ledger -------------------------------------------------------------

NOTIFICATION_COLUMNS = "transaction_id, serial, kind, delivered, detail, at, issuer"


def notification_row(record: NotificationRecord) -> tuple[Any, ...]:
    """The values of NOTIFICATION_COLUMNS, in order."""
    return (
        record.transaction_id,
        encode_serial(record.serial) if record.serial is not None else None,
        NotificationKind(record.kind).value,
        bool(record.delivered),
        record.detail,
        encode_time(record.at),
        record.issuer,
    )


def notification_record(row: DictRow) -> NotificationRecord:
    return NotificationRecord(
        transaction_id=row["transaction_id"],
        serial=_maybe_serial(row["serial"]),
        kind=NotificationKind(row["kind"]),
        delivered=bool(row["delivered"]),
        detail=row["detail"],
        at=decode_time(row["at"]),
        issuer=row["issuer"],
    )


REVOCATION_COLUMNS = "request_context, serial_text, outcome, received_at, uploaded_at"


def revocation_record(row: DictRow) -> RevocationRequestRecord:
    return RevocationRequestRecord(
        request_context=row["request_context"],
        serial_text=row["serial_text"],
        outcome=RevocationOutcome(row["outcome"]),
        received_at=decode_time(row["received_at"]),
        uploaded_at=_maybe_time(row["uploaded_at"]),
    )
