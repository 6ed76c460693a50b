"""Manual approval: a request is held (PENDING) until an operator decides.

The gate sits in the chain after the challenge and the profile, so only a
request that is authorised and within policy is ever held; what an operator
approves is then issued by the same steps as any other request (idempotent
retry, store, sign). The decision itself is made out of band (`scepd pending
approve|reject`, in another process) and written to the store, which is why
the gate keeps no state of its own: the store is the queue.

The client learns the outcome by polling (CertPoll, RFC 8894 3.3.3), signed
with the key it made the request with. The challenge is not checked again on
a poll: it was checked when the request arrived, and a one-time or Intune
challenge cannot be used twice. A poll therefore issues with the CSR kept in
the store, held once more to the profile now in force.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.clock import utc_now
from scepd.enroll.pipeline import Enrollment, Issued, Next, Pending, Rejected
from scepd.enroll.steps import csr_digest
from scepd.episodes import Backoff, keep_running
from scepd.logs import audit
from scepd.scep.constants import FailInfo, MessageType
from scepd.store.base import CertStatus, PendingRecord, PendingStatus
from scepd.store.roles import IssuedCertificates, PendingRequests


class ApprovalStore(PendingRequests, IssuedCertificates, Protocol):
    """What the gate needs: the queue, and the standing of the certificate a held renewal replaces."""


class ApprovalGate:
    """The chain step that holds requests for an operator, and answers their polls.

    `release` issues an approved request found by a poll: the profile step
    and everything after the gate, but no challenge.
    """

    def __init__(self, store: ApprovalStore, ttl: dt.timedelta, release: Next) -> None:
        self.store = store
        self.ttl = ttl
        self.release = release

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        held = await self.store.find_pending(enrollment.transaction_id)
        reviewed = x509.load_der_x509_csr(held.csr_der) if held is not None else None
        if held is not None and reviewed is not None and reviewed.public_key() == enrollment.csr.public_key():
            # A resend of a held request. Clients rebuild the CSR when they resend
            # (certmonger's subject key identifier changes each time), so it is
            # matched by transaction and key; what is issued is what the operator saw.
            if not _asks_the_same(reviewed, enrollment.csr):
                raise Rejected(FailInfo.BAD_REQUEST, "a resent request must ask for the names of the held request")
            enrollment = replace(enrollment, csr=reviewed, csr_der=held.csr_der)
        else:
            held, new = await self.store.hold_request(self._record(enrollment))
            if new:
                audit(
                    "held",
                    transaction_id=enrollment.transaction_id,
                    request=held.id,
                    subject=held.subject,
                    endpoint=held.endpoint,
                    profile=held.profile,
                    expires=held.expires_at.isoformat(),
                )
        return await self._settle(held, enrollment, next)

    async def held_for(
        self, transaction_id: str, subject: x509.Name, signer: x509.Certificate, now: dt.datetime
    ) -> tuple[PendingRecord, Enrollment]:
        """The held request a CertPoll asks about, as an enrollment to settle; Rejected if the poll cannot be its."""
        held = await self.store.find_pending(transaction_id)
        if held is None:
            # Not held here: perhaps issued at once and the reply was lost, which a
            # resent PKCSReq (idempotent) answers; a poll has no CSR to match it by.
            raise Rejected(FailInfo.BAD_CERT_ID, "no request is held for this transaction")
        if held.subject != subject.rfc4514_string():
            raise Rejected(FailInfo.BAD_CERT_ID, "the poll names another subject than the held request")
        original = x509.load_der_x509_certificate(held.signer_der)
        if original.public_key() != signer.public_key():
            raise Rejected(FailInfo.BAD_MESSAGE_CHECK, "the poll is not signed with the key that made the request")
        enrollment = Enrollment(
            transaction_id=held.transaction_id,
            message_type=MessageType[held.message_type],
            csr=x509.load_der_x509_csr(held.csr_der),
            csr_der=held.csr_der,
            signer_certificate=original,
            now=now,
            endpoint=held.endpoint,
            challenge_mode=held.challenge_mode,
            profile_name=held.profile,
            renewal_of=held.renewal_of,
        )
        return held, enrollment

    async def poll(self, held: PendingRecord, enrollment: Enrollment) -> Issued:
        """Answer a CertPoll: the certificate once approved; Pending or Rejected otherwise."""
        if held.renewal_of is not None and held.status is PendingStatus.APPROVED:
            renewed = await self.store.get(held.renewal_of)
            if renewed is not None and renewed.status is CertStatus.REVOKED:
                raise Rejected(FailInfo.BAD_CERT_ID, "the certificate this request renews was revoked meanwhile")
            # A renewal that lost to another of the same certificate (another node's, say) left a revoked,
            # never sent certificate under this transaction (`SupersedeRenewed`); a later poll must not
            # hand it out as the idempotent answer.
            mine = await self.store.find_by_transaction(held.transaction_id, held.csr_sha256)
            if mine is not None and mine.status is CertStatus.REVOKED:
                raise Rejected(FailInfo.BAD_CERT_ID, "signer certificate was already renewed")
        return await self._settle(held, enrollment, self.release)

    def _record(self, enrollment: Enrollment) -> PendingRecord:
        return PendingRecord(
            id=0,
            transaction_id=enrollment.transaction_id,
            csr_sha256=csr_digest(enrollment.csr_der),
            csr_der=enrollment.csr_der,
            signer_der=enrollment.signer_certificate.public_bytes(Encoding.DER),
            subject=enrollment.csr.subject.rfc4514_string(),
            endpoint=enrollment.endpoint,
            profile=enrollment.profile_name,
            challenge_mode=enrollment.challenge_mode,
            message_type=enrollment.message_type.name,
            renewal_of=enrollment.renewal_of,
            received_at=enrollment.now,
            expires_at=enrollment.now + self.ttl,
            status=PendingStatus.PENDING,
        )

    async def _settle(self, held: PendingRecord, enrollment: Enrollment, issue: Next) -> Issued:
        status = held.status
        if status is PendingStatus.PENDING and held.expires_at <= enrollment.now:
            await self.store.expire_pending(enrollment.now)
            status = PendingStatus.EXPIRED
        if status is PendingStatus.PENDING:
            raise Pending()
        if status is PendingStatus.REJECTED:
            note = f": {held.reason}" if held.reason else ""
            raise Rejected(FailInfo.BAD_REQUEST, f"an operator rejected the request{note}"[:200])
        if status is PendingStatus.EXPIRED:
            raise Rejected(FailInfo.BAD_REQUEST, "the request expired before an operator approved it")
        # Approved, or already issued: the idempotent-retry step behind `issue` returns
        # the certificate issued for this transaction and CSR, if there is one; the
        # store steps there also supersede the certificate a renewal replaces.
        issued = await issue(enrollment)
        if status is PendingStatus.APPROVED:
            await self.store.mark_pending_issued(held.id, issued.serial)
        return issued


def expiry_interval(ttls: Iterable[dt.timedelta]) -> float:
    """How often to expire held requests: a quarter of the shortest pending_ttl, between 1 s and a minute."""
    shortest = min((t.total_seconds() for t in ttls), default=240.0)
    return min(60.0, max(1.0, shortest / 4))


async def expire_pending_loop(
    store: PendingRequests,
    interval: float,
    clock: Callable[[], dt.datetime] | None = None,
    *,
    backoff: Backoff | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mark held requests past their pending_ttl expired, so an operator's list and the
    scepd_requests_pending gauge stay true even when the client never polls again.

    A store fault does not end it: keep_running logs it once, counts it and retries.
    """
    now = clock or utc_now

    async def once() -> None:
        expired = await store.expire_pending(now())
        if expired:
            audit("expired", count=expired, reason="no operator decided within pending_ttl")

    await keep_running("pending_expiry", once, interval=interval, backoff=backoff, task_status=task_status)


def _sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _asks_the_same(a: x509.CertificateSigningRequest, b: x509.CertificateSigningRequest) -> bool:
    """Same key, subject and subjectAltNames: the parts of a CSR that the profile copies."""
    return a.public_key() == b.public_key() and a.subject == b.subject and _sans(a) == _sans(b)
