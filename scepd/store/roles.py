"""What scepd asks of its storage, one small protocol per role.

Each caller names the role it uses (the CRL publisher `CrlState`, the
one-time challenge step `Challenges`, ...), so what a step can touch is read
from its signature, and a backend is whatever class answers every role.
`Store` composes them all, plus `close`, for the code that opens a store and
hands it out: the daemon's wiring and the CLI.

Rules every backend keeps (the tests in tests/store hold SQLite to them):
a write is durable when its coroutine returns; the methods that say "one
transaction" are atomic against other processes using the same store;
datetimes in and out are timezone-aware UTC; faults are raised as
`StoreError` with a `kind`, never as the driver's own exception.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from scepd.store.base import (
    CertificateRecord,
    CertStatus,
    NodeKeysRecord,
    NotificationRecord,
    PendingRecord,
    PendingStatus,
    RevocationRequestRecord,
    RevocationState,
    RevokedEntry,
    StoreCounts,
    StoreError,
)


@runtime_checkable
class IssuedCertificates(Protocol):
    """Every certificate this CA signed, with its status."""

    async def put_issued(self, record: CertificateRecord, *, once: bool = False) -> CertificateRecord | None:
        """Insert durably (on disk when this returns). Raises `SerialCollision`.

        With `once`, the check and the insert are one transaction: if a certificate
        for the same transactionID and CSR is stored already (the same request,
        issued meanwhile by another serving process), nothing is stored and that
        earlier record is returned. Otherwise returns None.
        """
        ...

    async def find_by_transaction(self, transaction_id: str, csr_sha256: str) -> CertificateRecord | None:
        """The certificate issued for this transactionID and CSR, whatever its status now."""
        ...

    async def latest_for_transaction(self, transaction_id: str) -> CertificateRecord | None:
        """The newest certificate issued under this transactionID (a CertPoll carries no CSR to match)."""
        ...

    async def get(self, serial: int) -> CertificateRecord | None:
        """The certificate with this serial; None for any serial never issued (out-of-range ones included)."""
        ...

    async def mark_superseded(self, serial: int) -> bool:
        """valid -> superseded; False when unknown or not valid."""
        ...

    async def revoke(self, serial: int, reason: str, when: dt.datetime) -> bool:
        """valid/superseded -> revoked; False when unknown or already revoked."""
        ...

    async def list_certificates(
        self, status: CertStatus | None = None, limit: int = 100, search: str | None = None
    ) -> list[CertificateRecord]:
        """Newest first; `search` matches subject or requester text, a transaction ID or a serial prefix."""
        ...


@runtime_checkable
class Challenges(Protocol):
    """One-time challenges, kept as digests only."""

    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        """Remember a one-time challenge by its hex SHA-256 digest, never the challenge itself."""
        ...

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        """Atomically use the challenge: True only once, and only before it expires."""
        ...


@runtime_checkable
class PendingRequests(Protocol):
    """Requests held for an operator's approval: the queue `scepd pending` works on."""

    async def hold_request(self, record: PendingRecord) -> tuple[PendingRecord, bool]:
        """Keep a request for approval (`record.id` is ignored); True if it is new.

        The same transactionID and CSR again (a client resending) gets the
        request already held back, whatever its status.
        """
        ...

    async def find_pending(self, transaction_id: str, csr_sha256: str | None = None) -> PendingRecord | None:
        """The newest held request for this transaction (and CSR, when given)."""
        ...

    async def get_pending(self, request_id: int) -> PendingRecord | None:
        """The held request with this id, whatever its status."""
        ...

    async def list_pending(self, status: PendingStatus | None = None, limit: int = 100) -> list[PendingRecord]:
        """Newest first."""
        ...

    async def decide_pending(
        self, request_id: int, approve: bool, reason: str, now: dt.datetime
    ) -> PendingRecord | None:
        """pending -> approved/rejected, only while unexpired; None when the request is not pending."""
        ...

    async def mark_pending_issued(self, request_id: int, serial: int) -> None:
        """approved -> issued, naming the certificate."""
        ...

    async def expire_pending(self, now: dt.datetime) -> int:
        """pending -> expired for every request past its expiry; how many."""
        ...


@runtime_checkable
class IntuneLedger(Protocol):
    """What scepd told Intune, and what Intune asked it to revoke."""

    async def record_notification(self, record: NotificationRecord) -> None:
        """Keep the outcome of a success or failure notification, for the operator."""
        ...

    async def notifications(self, transaction_id: str | None = None, limit: int = 100) -> list[NotificationRecord]:
        """Newest first."""
        ...

    async def notified_issuers(self) -> list[str]:
        """Every issuingCertificateAuthority a success notification was sent with: the names
        Intune files this CA's revocation requests under, old CA names after a rollover included."""
        ...

    async def apply_revocation_request(
        self, request_context: str, serial_text: str, serial: int | None, reason: str, when: dt.datetime
    ) -> tuple[RevocationRequestRecord, bool]:
        """Revoke and remember the request in one transaction; True if it is new.

        A request seen before (Intune re-offers what was not acknowledged) gets
        its first outcome back unchanged, so it is never counted twice.
        """
        ...

    async def unuploaded_revocation_requests(self) -> list[RevocationRequestRecord]:
        """Requests whose result Intune has not yet acknowledged, oldest first."""
        ...

    async def mark_revocation_uploaded(self, request_contexts: list[str], when: dt.datetime) -> None:
        """Intune acknowledged these results: they are not uploaded again."""
        ...


@runtime_checkable
class CrlState(Protocol):
    """What the CRL is built from, its number sequence, and the CRL last signed."""

    async def revoked_entries(self, *, valid_after: dt.datetime | None = None) -> list[RevokedEntry]:
        """Every revoked certificate, for the CRL; with `valid_after`, only those whose notAfter is later."""
        ...

    async def revocation_state(self) -> RevocationState:
        """How many certificates are revoked and the latest revocation time, without reading them all."""
        ...

    async def next_crl_number(self) -> int:
        """A CRL number higher than any handed out before, durably (RFC 5280 5.2.3)."""
        ...

    async def save_crl(self, number: int, der: bytes) -> None:
        """Keep `der` as the current CRL, unless one with a higher number is kept already."""
        ...

    async def latest_crl(self) -> bytes | None:
        """The CRL kept by `save_crl`, if any."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Named leases with an expiry: how the nodes sharing one store agree which of them runs the work
    that must run once per deployment (scepd/leadership.py).

    Expiry is measured on the store's own clock (PostgreSQL's, for every node alike), so the nodes'
    clocks need not agree; a holder bounds its own stay on its monotonic clock instead.
    """

    async def claim(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew the lease `name` for `seconds` from now, in one atomic step.

        True if the lease was free, had expired, or was held by `holder` already (then its expiry
        moves on); False while another holder's lease is still valid, and nothing changes.
        """
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up if `holder` holds it, so another can claim it at once; otherwise nothing."""
        ...


@runtime_checkable
class NodeKeys(Protocol):
    """Each node's key fingerprint, so nodes sharing one store can tell they use the same keys
    (scepd/nodekeys.py). One row per node name, replaced at every announcement."""

    async def announce(self, node: str, fingerprint: str, now: dt.datetime) -> None:
        """Record (or replace) `node`'s fingerprint, seen at `now`."""
        ...

    async def fingerprints(self, since: dt.datetime) -> list[NodeKeysRecord]:
        """Every node's row seen at `since` or later, by node name."""
        ...


@runtime_checkable
class StoreHealth(Protocol):
    """Whether the store can take writes now (readiness, and the gate before signing)."""

    @property
    def fault(self) -> StoreError | None:
        """While writes fail (a fault episode): the last error; None once a write commits again.

        Lets a caller skip work that would have to be recorded (signing a
        certificate) while the store cannot record it.
        """
        ...

    async def ping(self) -> None:
        """Raise `StoreError` unless the store can commit a write (one that just committed may count)."""
        ...


@runtime_checkable
class Counts(Protocol):
    """The numbers behind the store-derived gauges."""

    async def counts(self, now: dt.datetime) -> StoreCounts:
        """Certificates by status value, every status present (0 when none), and the requests still
        waiting for a decision (unexpired at `now`).

        Read on every scrape: it must not count a large table row by row, nor wait for writes in flight.
        """
        ...


@runtime_checkable
class Store(
    IssuedCertificates,
    Challenges,
    PendingRequests,
    IntuneLedger,
    CrlState,
    Leases,
    NodeKeys,
    StoreHealth,
    Counts,
    Protocol,
):
    """Every role in one object, as the wiring opens it; callers take the roles they need instead."""

    async def close(self) -> None:
        """Release the connection; every later call raises `StoreError` (kind closed)."""
        ...


ROLES: tuple[type, ...] = (
    IssuedCertificates,
    Challenges,
    PendingRequests,
    IntuneLedger,
    CrlState,
    Leases,
    NodeKeys,
    StoreHealth,
    Counts,
)
"""The role protocols a backend implements (`Store` adds `close`)."""
