"""Renewal: a request signed by a certificate this CA issued needs no other secret.

The client proves possession of the old certificate's key by signing the
PKIMessage with it (RFC 8894 section 3.3.1.2); the service has already checked
that signature. This step checks that the certificate itself is ours, current
and still in good standing, and hands the enrollment on as a renewal of it;
`SupersedeRenewed` (a store step of the issuing end) marks it superseded once
the new certificate is issued.
"""

from __future__ import annotations

from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.enroll.steps import csr_digest
from scepd.locks import KeyedLock
from scepd.scep.constants import FailInfo
from scepd.store.base import CertStatus
from scepd.store.roles import IssuedCertificates


class SignerIsIssuedCertificate:
    """Accept an enrollment signed by a valid, unexpired certificate of this CA.

    Renewals of one certificate are serialised: a per-serial lock is held
    across everything after this step, issuance and `SupersedeRenewed`
    included, so the second of two concurrent renewals finds the certificate
    superseded and is refused. The lock covers one process: two serving
    processes or two nodes can both get past this check, and
    `SupersedeRenewed` refuses the second there. A retry of a renewal that
    already went through (same transactionID and CSR) is let through
    although the old certificate is now superseded, so that the
    idempotent-retry step further down can return the same new certificate.
    """

    def __init__(self, store: IssuedCertificates, ca_certificate: x509.Certificate) -> None:
        self.store = store
        self.ca_certificate = ca_certificate
        self._locks = KeyedLock[int]()

    def applies(self, enrollment: Enrollment) -> bool:
        """Cheap pre-check for `FirstMatching`: does the signer claim this CA as issuer?"""
        return enrollment.signer_certificate.issuer == self.ca_certificate.subject

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        signer = enrollment.signer_certificate
        self._check_issued_by_ca(signer)
        if not signer.not_valid_before_utc <= enrollment.now <= signer.not_valid_after_utc:
            raise Rejected(FailInfo.BAD_TIME, "signer certificate is expired or not yet valid")
        serial = signer.serial_number
        async with self._locks.hold(serial):
            await self._check_standing(enrollment, serial)
            return await next(replace(enrollment, renewal_of=serial, challenge_mode="renewal"))

    def _check_issued_by_ca(self, signer: x509.Certificate) -> None:
        if signer.issuer != self.ca_certificate.subject:
            raise Rejected(FailInfo.BAD_REQUEST, "signer certificate was not issued by this CA")
        try:
            signer.verify_directly_issued_by(self.ca_certificate)
        except (ValueError, TypeError, InvalidSignature):
            # Right name, wrong key: a look-alike CA, or a forgery.
            raise Rejected(FailInfo.BAD_REQUEST, "signer certificate was not issued by this CA") from None

    async def _check_standing(self, enrollment: Enrollment, serial: int) -> None:
        record = await self.store.get(serial)
        if record is None:
            raise Rejected(FailInfo.BAD_REQUEST, "signer certificate is not known to this CA")
        signer_der = enrollment.signer_certificate.public_bytes(Encoding.DER)
        if record.der != signer_der:
            raise Rejected(FailInfo.BAD_CERT_ID, "signer certificate differs from the one stored under its serial")
        if record.status is CertStatus.REVOKED:
            raise Rejected(FailInfo.BAD_CERT_ID, "signer certificate is revoked")
        if record.status is CertStatus.SUPERSEDED and not await self._is_retry(enrollment, serial):
            raise Rejected(FailInfo.BAD_CERT_ID, "signer certificate was already renewed")

    async def _is_retry(self, enrollment: Enrollment, serial: int) -> bool:
        earlier = await self.store.find_by_transaction(enrollment.transaction_id, csr_digest(enrollment.csr_der))
        # A revoked one is no answer to a retry: it may be the loser of two renewals raced on two nodes
        # (`SupersedeRenewed`), revoked before anyone saw it.
        return earlier is not None and earlier.renewal_of == serial and earlier.status is not CertStatus.REVOKED
