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


class StoreError(Exception):
    """The store failed (disk, lock, corruption): the daemon's fault, not the client's."""


class SerialCollision(StoreError):
    """A certificate with this serial is already stored; sign again with a fresh serial."""

    def __init__(self, serial: int) -> None:
        super().__init__(f"serial {serial:x} is already stored")
        self.serial = serial


class Store(Protocol):
    async def close(self) -> None: ...

    async def put_issued(self, record: CertificateRecord) -> None:
        """Insert durably (on disk when this returns). Raises `SerialCollision`."""

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        """The certificate issued for this transactionID and CSR, whatever its status now."""

    async def get(self, serial: int) -> CertificateRecord | None: ...

    async def mark_superseded(self, serial: int) -> bool:
        """valid -> superseded; False when unknown or not valid."""

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        """valid/superseded -> revoked; False when unknown or already revoked."""

    async def list_certificates(
        self, status: CertStatus | None = None, limit: int = 100
    ) -> list[CertificateRecord]:
        """Newest first."""

    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        """Remember a one-time challenge by its hex SHA-256 digest, never the challenge itself."""

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        """Atomically use the challenge: True only once, and only before it expires."""

    async def ping(self) -> None:
        """Raise `StoreError` unless the store can commit a write (readiness)."""
