"""The values and errors that cross the store's interfaces (`roles.py`), whatever the backend.

Records are frozen: a backend builds them from its rows and callers never
change them. Every datetime here is timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

MAX_SERIAL = (1 << 160) - 1  # RFC 5280 4.1.2.2: at most 20 octets, positive


class CertStatus(str, enum.Enum):
    VALID = "valid"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"  # renewed; still unexpired, but a newer one replaces it


@dataclass(frozen=True)
class CertificateRecord:
    """One issued certificate as the store keeps it."""

    serial: int
    transaction_id: str
    subject: str  # RFC 4514
    requester: str  # RFC 4514 subject of the certificate that signed the request
    csr_sha256: str  # hex SHA-256 of the CSR DER
    profile: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    status: CertStatus
    der: bytes
    renewal_of: int | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None


class NotificationKind(str, enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class NotificationRecord:
    """What scepd told Intune about one transaction, and whether Intune took it."""

    transaction_id: str
    serial: int | None  # the certificate it concerns; None for a failure notification
    kind: NotificationKind
    delivered: bool  # Intune answered Success
    detail: str  # Intune's code, or the error that kept the call from succeeding
    at: dt.datetime
    issuer: str | None = None  # the issuingCertificateAuthority sent (success notifications)


class RevocationOutcome(str, enum.Enum):
    """What became of one revocation request that Intune handed us."""

    REVOKED = "revoked"
    NOT_FOUND = "not_found"  # no certificate of ours with that serial
    ALREADY_REVOKED = "already_revoked"


@dataclass(frozen=True)
class RevocationRequestRecord:
    request_context: str
    serial_text: str  # as Intune sent it
    outcome: RevocationOutcome
    received_at: dt.datetime
    uploaded_at: dt.datetime | None


@dataclass(frozen=True)
class NodeKeysRecord:
    """What one node last said about the keys it serves with (scepd/nodekeys.py)."""

    node: str
    fingerprint: str
    seen_at: dt.datetime


@dataclass(frozen=True)
class RevokedEntry:
    """One line of the CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: str | None


@dataclass(frozen=True)
class RevocationState:
    """A cheap fingerprint of the revoked set; revocations are final, so any new one changes it."""

    count: int
    latest: dt.datetime | None  # the newest revoked_at


class PendingStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for an operator
    APPROVED = "approved"  # the next poll (or resend) issues
    REJECTED = "rejected"
    EXPIRED = "expired"  # nobody decided within the profile's pending_ttl
    ISSUED = "issued"  # approved and issued: `serial` names the certificate


@dataclass(frozen=True)
class PendingRecord:
    """A request held for manual approval, with what is needed to issue it later.

    The challenge was checked when the request arrived (a one-time or Intune
    challenge cannot be checked twice), so issuing on a later poll needs only
    the CSR, the profile and the key the client signs its polls with.
    """

    id: int
    transaction_id: str
    csr_sha256: str
    csr_der: bytes
    signer_der: bytes  # the certificate that signed the request; polls must come from its key
    subject: str  # RFC 4514, as the CSR asks
    endpoint: str
    profile: str
    challenge_mode: str
    message_type: str  # MessageType name: PKCS_REQ or RENEWAL_REQ
    renewal_of: int | None
    received_at: dt.datetime
    expires_at: dt.datetime
    status: PendingStatus
    decided_at: dt.datetime | None = None
    reason: str = ""  # the operator's note on approval or rejection
    serial: int | None = None


@dataclass(frozen=True)
class StoreCounts:
    """What the store-derived gauges show, read together."""

    certificates: dict[str, int]  # by status value, every status present
    pending: int  # requests waiting for a decision, unexpired


class StoreError(Exception):
    """The store failed (disk, lock, corruption): the daemon's fault, not the client's.

    `kind` names the fault for the scepd_store_errors_total metric, the log
    and the operator: full, readonly, io, locked, corrupt, cantopen, closed,
    constraint (a query broke a rule: a bug, not the disk), collision, other.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class SerialCollision(StoreError):
    """A certificate with this serial is already stored; sign again with a fresh serial."""

    def __init__(self, serial: int) -> None:
        super().__init__(f"serial {serial:x} is already stored", "collision")
        self.serial = serial
