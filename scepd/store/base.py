"""The store interface: what the enrollment chain needs to remember.

A handful of async methods, so the embedded SQLite store (`sqlite.py`) and a
later networked database for several nodes sharing one CA are interchangeable.
Every datetime that crosses this interface is timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Protocol

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


class Store(Protocol):
    @property
    def fault(self) -> StoreError | None:
        """While writes fail (a fault episode): the last error; None once a write commits again.

        Lets a caller skip work that would have to be recorded (signing a
        certificate) while the store cannot record it.
        """

    async def close(self) -> None: ...

    async def put_issued(self, record: CertificateRecord, *, once: bool = False) -> CertificateRecord | None:
        """Insert durably (on disk when this returns). Raises `SerialCollision`.

        With `once`, the check and the insert are one transaction: if a certificate
        for the same transactionID and CSR is stored already (the same request,
        issued meanwhile by another serving process), nothing is stored and that
        earlier record is returned. Otherwise returns None.
        """

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        """The certificate issued for this transactionID and CSR, whatever its status now."""

    async def latest_for_transaction(self, transaction_id: str) -> CertificateRecord | None:
        """The newest certificate issued under this transactionID (a CertPoll carries no CSR to match)."""

    async def get(self, serial: int) -> CertificateRecord | None: ...

    async def mark_superseded(self, serial: int) -> bool:
        """valid -> superseded; False when unknown or not valid."""

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        """valid/superseded -> revoked; False when unknown or already revoked."""

    async def list_certificates(
        self, status: CertStatus | None = None, limit: int = 100, search: str | None = None
    ) -> list[CertificateRecord]:
        """Newest first; `search` matches subject or requester text, a transaction ID or a serial prefix."""

    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        """Remember a one-time challenge by its hex SHA-256 digest, never the challenge itself."""

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        """Atomically use the challenge: True only once, and only before it expires."""

    async def record_notification(self, record: NotificationRecord) -> None:
        """Keep the outcome of a success or failure notification, for the operator."""

    async def notifications(self, transaction_id: str | None = None, limit: int = 100) -> list[NotificationRecord]:
        """Newest first."""

    async def notified_issuers(self) -> list[str]:
        """Every issuingCertificateAuthority a success notification was sent with: the names
        Intune files this CA's revocation requests under, old CA names after a rollover included."""

    async def apply_revocation_request(
        self, request_context: str, serial_text: str, serial: int | None, reason: str, when: dt.datetime
    ) -> tuple[RevocationRequestRecord, bool]:
        """Revoke and remember the request in one transaction; True if it is new.

        A request seen before (Intune re-offers what was not acknowledged) gets
        its first outcome back unchanged, so it is never counted twice.
        """

    async def unuploaded_revocation_requests(self) -> list[RevocationRequestRecord]:
        """Requests whose result Intune has not yet acknowledged, oldest first."""

    async def mark_revocation_uploaded(self, request_contexts: list[str], when: dt.datetime) -> None: ...

    async def revoked_entries(self, *, valid_after: dt.datetime | None = None) -> list[RevokedEntry]:
        """Every revoked certificate, for the CRL; with `valid_after`, only those whose notAfter is later."""

    async def revocation_state(self) -> RevocationState:
        """How many certificates are revoked and the latest revocation time, without reading them all."""

    async def next_crl_number(self) -> int:
        """A CRL number higher than any handed out before, durably (RFC 5280 5.2.3)."""

    async def save_crl(self, number: int, der: bytes) -> None:
        """Keep `der` as the current CRL, unless one with a higher number is kept already."""

    async def latest_crl(self) -> bytes | None:
        """The CRL kept by `save_crl`, if any."""

    async def hold_request(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        """Keep a request for approval (`record.id` is ignored); True if it is new.

        The same transactionID and CSR again (a client resending) gets the
        request already held back, whatever its status.
        """

    async def find_pending(self, transaction_id: str, csr_sha256: str | None = None) -> PendingRecord | None:
        """The newest held request for this transaction (and CSR, when given)."""

    async def get_pending(self, request_id: int) -> PendingRecord | None: ...

    async def list_pending(self, status: PendingStatus | None = None, limit: int = 100) -> list[PendingRecord]:
        """Newest first."""

    async def decide_pending(
        self, request_id: int, approve: bool, reason: str, now: dt.datetime
    ) -> PendingRecord | None:
        """pending -> approved/rejected, only while unexpired; None when the request is not pending."""

    async def mark_pending_issued(self, request_id: int, serial: int) -> None:
        """approved -> issued, naming the certificate."""

    async def expire_pending(self, now: dt.datetime) -> int:
        """pending -> expired for every request past its expiry; how many."""

    async def ping(self) -> None:
        """Raise `StoreError` unless the store can commit a write (readiness)."""
