"""The issuing end of the chain: the store steps (idempotent retries, durable
record, superseding the renewed certificate) and signing.

Everything the chain writes about certificates is written here, on the way
back from signing; the policy and challenge steps above only decide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from cryptography import x509

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.enroll.profiles import Profile
from scepd.locks import KeyedLock
from scepd.logs import audit
from scepd.scep.constants import FailInfo
from scepd.store.base import CertificateRecord, CertStatus, SerialCollision, StoreError
from scepd.store.roles import IssuedCertificates, StoreHealth


def csr_digest(csr_der: bytes) -> str:
    """How the store names a request's CSR (hex SHA-256 of its DER): retries and renewals match on it."""
    return hashlib.sha256(csr_der).hexdigest()


class IdempotentRetry:
    """A retry with the same transactionID and CSR gets the certificate already issued.

    Clients resend when a reply is lost; issuing a second certificate for the
    same key would leave an orphan the admin never asked for. A per-transaction
    lock closes the race between two copies of one request in flight at once.
    """

    def __init__(self, store: IssuedCertificates) -> None:
        self.store = store
        self._locks = KeyedLock[str]()

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        tid = enrollment.transaction_id
        async with self._locks.hold(tid):
            found = await self.store.find_by_transaction(tid, csr_digest(enrollment.csr_der))
            if found is not None:
                cert = x509.load_der_x509_certificate(found.der)
                return Issued(cert, found.der, found.serial, enrollment, reused=True)
            return await next(enrollment)


class RecordingStore(IssuedCertificates, StoreHealth, Protocol):
    """What `StoreIssued` needs: the certificates, and whether writes work at all before signing."""


class StoreIssued:
    """Record the certificate durably before anyone sees it.

    Runs after signing on the way back, so a certificate that reaches a client
    is always in the store. Serials are random: on the rare collision the
    certificate is signed again with a fresh serial, never reused.

    While the store is failing (a full disk, say) nothing is signed that could
    not be recorded: a write probe must succeed first, else the StoreError goes
    up as a 503. A certificate signed just as the store failed is dropped, and
    its serial logged as an audit event, so the signature is accounted for.
    """

    ATTEMPTS = 4

    def __init__(self, store: RecordingStore) -> None:
        self.store = store

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        if self.store.fault is not None:
            await self.store.ping()  # raises while writes fail; a success ends the episode
        requester = enrollment.signer_certificate.subject.rfc4514_string()  # before signing: it can fail
        for _ in range(self.ATTEMPTS):
            issued = await next(enrollment)
            cert = issued.certificate
            record = CertificateRecord(
                serial=issued.serial,
                transaction_id=enrollment.transaction_id,
                subject=cert.subject.rfc4514_string(),
                requester=requester,
                csr_sha256=csr_digest(enrollment.csr_der),
                profile=enrollment.profile_name,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                issued_at=enrollment.now,
                status=CertStatus.VALID,
                der=issued.der,
                renewal_of=enrollment.renewal_of,
            )
            try:
                earlier = await self.store.put_issued(record, once=True)
            except SerialCollision:
                continue
            except StoreError as e:
                audit(
                    "not_delivered",
                    transaction_id=enrollment.transaction_id,
                    serial=f"{issued.serial:x}",
                    subject=record.subject,
                    kind=e.kind,
                    # Most often it is not recorded; but a connection lost during COMMIT leaves it
                    # unknown, and then the record may be there (a retry of this request finds it).
                    reason="the store did not confirm it was recorded",
                )
                raise
            if earlier is not None:
                # IdempotentRetry's lock covers one process; a copy of this request
                # issued by another serving process wins, and this certificate,
                # never recorded, is never sent.
                cert = x509.load_der_x509_certificate(earlier.der)
                return Issued(cert, earlier.der, earlier.serial, enrollment, reused=True)
            metrics.CERTIFICATES_ISSUED.labels(profile=enrollment.profile_name).inc()
            return issued
        raise RuntimeError("random serials collided repeatedly; the serial source is broken")


class SupersedeRenewed:
    """Once a renewal is issued, record that its certificate replaces the old one.

    The old certificate becomes superseded; with the profile's
    `revoke_superseded` it is then revoked (reason superseded), unless the
    certificate handed back is an earlier one (a retry: the first pass already
    did this).

    The renewal step's per-serial lock keeps two renewals of one certificate
    apart in one process only. Two serving processes, or two nodes on one
    database, can both find the old certificate valid and both issue. The
    conditional `mark_superseded` settles it: exactly one renewal turns the
    old certificate from valid to superseded. The other one (or one that
    raced an operator's revocation) has already recorded its new
    certificate, which is revoked at once and never sent; its client gets
    badCertId, as a second renewal on one node does.
    """

    def __init__(self, store: IssuedCertificates, *, revoke: bool = False) -> None:
        self.store = store
        self.revoke = revoke

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        issued = await next(enrollment)
        old = enrollment.renewal_of
        if old is None:
            return issued
        if issued.reused:
            await self.store.mark_superseded(old)  # a no-op unless the first pass stopped before it
            return issued
        if not await self.store.mark_superseded(old):
            await self.store.revoke(issued.serial, "superseded", enrollment.now)
            audit(
                "not_delivered",
                transaction_id=enrollment.transaction_id,
                serial=f"{issued.serial:x}",
                subject=issued.certificate.subject.rfc4514_string(),
                renewal_of=f"{old:x}",
                reason="the old certificate was renewed or revoked meanwhile; revoked",
            )
            raise Rejected(FailInfo.BAD_CERT_ID, "signer certificate was already renewed")
        if self.revoke:
            await self.store.revoke(old, "superseded", enrollment.now)
        return issued


class SignCertificate:
    """The terminal step: build the certificate from CSR and profile and sign it on the token."""

    def __init__(self, ca: CertificateAuthority, profiles: Mapping[str, Profile]) -> None:
        self.ca = ca
        self.profiles = profiles

    async def __call__(self, enrollment: Enrollment) -> Issued:
        profile = self.profiles[enrollment.profile_name]
        template = self.ca.template(enrollment.csr, profile, enrollment.now)
        der = await self.ca.sign(template)
        return Issued(x509.load_der_x509_certificate(der), der, template.serial, enrollment)
