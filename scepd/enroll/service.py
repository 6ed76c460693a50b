"""One SCEP endpoint's PKIOperation: request bytes in, signed CertRep bytes out.

Everything a client can get wrong ends here as a signed FAILURE CertRep with
a failInfo: an unparseable request is the only case left to HTTP (400), and a
fault of the token or store is the daemon's, not the client's (503 upstream).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.ca.publisher import CrlPublisher
from scepd.clock import Clock, utc_now
from scepd.enroll.approval import ApprovalGate
from scepd.enroll.pipeline import Enrollment, Issued, Next, Pending, Rejected
from scepd.keys.base import HashName, RsaPadding, UnsupportedParameters
from scepd.logs import audit, event
from scepd.scep import (
    ContentCipher,
    CsrRead,
    MalformedMessage,
    PkiMessage,
    ScepError,
    Unreadable,
    build_cert_rep,
    parse_issuer_and_serial,
    parse_issuer_and_subject,
    parse_pki_message,
    read_csr,
    sign_cert_rep,
    unseal,
)
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from scepd.store.base import CertStatus
from scepd.store.roles import IssuedCertificates

log = logging.getLogger("scepd.scep")
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """What the reply carries; turned into a signed CertRep by `ScepService._reply`."""

    status: PkiStatus
    fail_info: FailInfo | None = None
    reason: str | None = None
    certificates: tuple[bytes, ...] = ()
    profile: str = "-"
    crls: tuple[bytes, ...] = ()
    detail: str | None = None  # for the server's log only, never the client


class ScepService:
    """The PKIOperation of one endpoint: its chain, shared CA and store."""

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        store: IssuedCertificates,
        chain: Next,
        endpoint: str,
        challenge_mode: str,
        allow_sha1: bool = True,
        allow_single_des: bool = False,
        clock: Clock = utc_now,
        crl: CrlPublisher | None = None,
        approval: ApprovalGate | None = None,
    ) -> None:
        self.ca = ca
        self.store = store
        self.chain = chain
        self.endpoint = endpoint
        self.challenge_mode = challenge_mode
        self.allow_single_des = allow_single_des
        hashes = {HashName.SHA256, HashName.SHA384, HashName.SHA512, HashName.SHA224}
        if allow_sha1:
            hashes.add(HashName.SHA1)
        self.allowed_hashes = frozenset(hashes)
        self.clock = clock
        self.crl = crl
        self.approval = approval

    async def pki_operation(self, body: bytes) -> bytes:
        """Answer one request; raises MalformedMessage when it is not SCEP at all."""
        started = time.perf_counter()
        try:
            msg = parse_pki_message(body, allowed_hashes=self.allowed_hashes)
        except ScepError as e:
            if e.signer_certificate is None or e.sender_nonce is None:
                # Without the requester's nonce there is nothing a client could match a reply to.
                raise MalformedMessage(f"unusable request: {e.reason}") from e
            operation = e.message_type.name if e.message_type else "unknown"
            answer = Answer(PkiStatus.FAILURE, e.fail_info, e.reason)
            self._account(operation, e.transaction_id or "", answer, started)
            return await self._reply(
                e.transaction_id or "", e.sender_nonce, e.signer_certificate, answer, None, HashName.SHA256
            )
        operation = msg.message_type.name
        try:
            answer = await self._dispatch(msg)
        except Unreadable as e:
            metrics.UNREADABLE_REQUESTS.labels(e.detail.partition(":")[0]).inc()
            answer = Answer(PkiStatus.FAILURE, e.fail_info, e.reason, detail=e.detail)
        except ScepError as e:
            answer = Answer(PkiStatus.FAILURE, e.fail_info, e.reason)
        self._account(operation, msg.transaction_id, answer, started)
        return await self._reply(msg.transaction_id, msg.sender_nonce, msg.signer_certificate, answer, msg, msg.digest)

    async def _dispatch(self, msg: PkiMessage) -> Answer:
        if msg.message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            return await self._enroll(msg)
        if msg.message_type is MessageType.GET_CERT:
            return await self._get_cert(msg)
        if msg.message_type is MessageType.GET_CRL and self.crl is not None:
            return await self._get_crl(msg)
        if msg.message_type is MessageType.CERT_POLL:
            return await self._poll(msg)
        return Answer(PkiStatus.FAILURE, FailInfo.BAD_REQUEST, f"{msg.message_type.name} is not supported")

    async def _read(self, msg: PkiMessage, reader: Callable[[bytes], T]) -> T:
        """Open the envelope and read its payload with `reader`, with one answer for every failure.

        Whether the key-transport block unwrapped, the content's padding was
        right, or the payload parsed depends on secret data (a stranger can
        replay a captured envelope with changes), so all of them end as the
        same `Unreadable`, and the payload is read even when the envelope
        did not open, so that the two cases also cost about the same.
        """
        env = msg.envelope
        if env is None:
            raise ScepError(FailInfo.BAD_REQUEST, "the request carries no pkcsPKIEnvelope")
        if env.cipher is ContentCipher.DES_CBC and not self.allow_single_des:
            raise ScepError(FailInfo.BAD_ALG, "single DES is refused by configuration")
        try:
            opened = await unseal(env, self.ca.ra_key)
        except UnsupportedParameters as e:
            event(log, logging.INFO, "envelope_unsupported", transaction_id=msg.transaction_id, reason=str(e))
            raise ScepError(FailInfo.BAD_ALG, "the envelope's key transport parameters are not supported") from None
        values: list[T] = []
        problem = ""
        try:
            values.append(reader(opened.content))
        except Exception as e:  # noqa: BLE001 - whatever a parser raises, the payload is unreadable
            problem = f"{type(e).__name__}: {e}"
        if not opened.readable:
            raise Unreadable(opened.detail)
        if not values:
            raise Unreadable(f"payload: {problem}")
        return values[0]

    async def _enroll(self, msg: PkiMessage) -> Answer:
        read = await self._read(msg, _signed_csr)
        enrollment = Enrollment(
            transaction_id=msg.transaction_id,
            message_type=msg.message_type,
            csr=read.csr,
            csr_der=read.der,
            signer_certificate=msg.signer_certificate,
            now=self.clock(),
            endpoint=self.endpoint,
            challenge_mode=self.challenge_mode,
        )
        if read.quirk:
            event(log, logging.INFO, "csr_quirk", transaction_id=msg.transaction_id, quirk=read.quirk)
        return await self._answer(enrollment, self.chain(enrollment))

    async def _poll(self, msg: PkiMessage) -> Answer:
        issuer, subject = await self._read(msg, parse_issuer_and_subject)
        if issuer != self.ca.certificate.subject:
            return Answer(PkiStatus.FAILURE, FailInfo.BAD_CERT_ID, "that issuer is not this CA")
        issued = await self._issued_for_poll(msg, subject)
        if issued is not None:
            return issued
        if self.approval is None:
            return Answer(PkiStatus.FAILURE, FailInfo.BAD_CERT_ID, "no request is held for this transaction")
        try:
            held, enrollment = await self.approval.held_for(
                msg.transaction_id, subject, msg.signer_certificate, self.clock()
            )
        except Rejected as e:
            return Answer(PkiStatus.FAILURE, e.fail_info, e.reason)
        return await self._answer(enrollment, self.approval.poll(held, enrollment))

    async def _issued_for_poll(self, msg: PkiMessage, subject: x509.Name) -> Answer | None:
        """A poll for a transaction whose certificate was issued already (the client lost the reply).

        RFC 8894 4.3: the client polls with the transactionID of its request. The certificate is
        given again when the poll comes from the requester: signed with the key the certificate
        certifies (an initial enrollment's self-signed signer), or naming the subject the
        certificate was issued to. A request still held for approval is answered by the gate.
        """
        record = await self.store.latest_for_transaction(msg.transaction_id)
        if record is None or record.status is not CertStatus.VALID:
            return None
        cert = x509.load_der_x509_certificate(record.der)
        if cert.public_key() != msg.signer_certificate.public_key() and cert.subject != subject:
            return None
        event(log, logging.INFO, "poll_after_issue", transaction_id=msg.transaction_id, serial=f"{record.serial:x}")
        return Answer(PkiStatus.SUCCESS, certificates=(record.der,), profile=record.profile)

    async def _answer(self, enrollment: Enrollment, outcome: Awaitable[Issued]) -> Answer:
        """Await the chain (or a poll) and turn its outcome into an answer and an audit event."""
        requested = enrollment.csr.subject.rfc4514_string()
        try:
            issued = await outcome
        except Rejected as e:
            audit(
                "rejected",
                transaction_id=enrollment.transaction_id,
                subject=requested,
                endpoint=self.endpoint,
                fail_info=e.fail_info.name,
                reason=e.reason,
            )
            return Answer(PkiStatus.FAILURE, e.fail_info, e.reason, profile=e.profile or enrollment.profile_name)
        except Pending as e:
            return Answer(PkiStatus.PENDING, profile=e.profile or enrollment.profile_name)
        done = issued.enrollment  # as the chain completed it: profile, certificate type, challenge
        audit(
            "issued",
            transaction_id=done.transaction_id,
            subject=issued.certificate.subject.rfc4514_string(),
            serial=f"{issued.serial:x}",
            endpoint=self.endpoint,
            profile=done.profile_name,
            type=done.certificate_type,
            challenge=done.challenge_mode,
            reused=issued.reused,
        )
        return Answer(PkiStatus.SUCCESS, certificates=(issued.der,), profile=done.profile_name)

    async def _get_cert(self, msg: PkiMessage) -> Answer:
        issuer, serial = await self._read(msg, parse_issuer_and_serial)
        record = await self.store.get(serial) if issuer == self.ca.certificate.subject else None
        if record is None:
            return Answer(PkiStatus.FAILURE, FailInfo.BAD_CERT_ID, "no certificate with that issuer and serial")
        return Answer(PkiStatus.SUCCESS, certificates=(record.der,))

    async def _get_crl(self, msg: PkiMessage) -> Answer:
        """RFC 8894 3.3.4: the payload names a certificate (issuer and serial) whose
        status the client wants; we have one CRL, for everything our CA issued."""
        assert self.crl is not None
        issuer, _ = await self._read(msg, parse_issuer_and_serial)
        if issuer != self.ca.certificate.subject:
            return Answer(PkiStatus.FAILURE, FailInfo.BAD_CERT_ID, "that issuer is not this CA")
        crl = await self.crl.get()
        return Answer(PkiStatus.SUCCESS, crls=(crl.der,))

    async def _reply(
        self,
        transaction_id: str,
        recipient_nonce: bytes,
        recipient: x509.Certificate,
        answer: Answer,
        msg: PkiMessage | None,
        digest: HashName,
    ) -> bytes:
        cipher, padding = ContentCipher.AES256_CBC, RsaPadding.PKCS1V15
        if msg is not None and msg.envelope is not None:
            # Mirror the client: it has shown it can open what it used itself.
            cipher, padding = msg.envelope.cipher, msg.envelope.padding
        certificates, crls = answer.certificates, answer.crls
        if (certificates or crls) and not isinstance(recipient.public_key(), rsa.RSAPublicKey):
            answer = Answer(PkiStatus.FAILURE, FailInfo.BAD_ALG, "the reply can only be enveloped to an RSA key")
            certificates, crls = (), ()
        if digest not in self.allowed_hashes:
            digest = HashName.SHA256
        draft = build_cert_rep(
            transaction_id=transaction_id,
            recipient_nonce=recipient_nonce,
            sender_nonce=os.urandom(16),
            status=answer.status,
            fail_info=answer.fail_info,
            fail_info_text=answer.reason if answer.status is PkiStatus.FAILURE else None,
            certificates=certificates,
            crls=crls,
            recipient_certificate=recipient if certificates or crls else None,
            cipher=cipher,
            recipient_padding=padding,
            signer_certificate=self.ca.ra_certificate,
            digest=digest,
        )
        return await sign_cert_rep(draft, self.ca.ra_key)

    def _account(self, operation: str, transaction_id: str, answer: Answer, started: float) -> None:
        outcome = answer.fail_info.name if answer.fail_info else answer.status.name
        metrics.ENROLLMENTS.labels(operation, answer.profile, self.challenge_mode, outcome).inc()
        metrics.ENROLLMENT_SECONDS.labels(operation).observe(time.perf_counter() - started)
        if answer.status is PkiStatus.FAILURE:
            # Quoted as logfmt: the transactionID is the client's, spaces and all.
            event(
                log,
                logging.INFO,
                "scep_failure",
                transaction_id=transaction_id,
                operation=operation,
                fail_info=outcome,
                reason=answer.reason,
                detail=answer.detail,
            )


@dataclass(frozen=True)
class _Csr:
    csr: x509.CertificateSigningRequest
    der: bytes
    quirk: str | None


def _signed_csr(der: bytes) -> _Csr:
    """The PKCS#10 request of a PKCSReq/RenewalReq, refused unless its signature verifies."""
    read: CsrRead | None = read_csr(der)
    if read is None:
        raise ValueError("not a PKCS#10 request")
    if not read.signature_valid:
        raise ValueError("the PKCS#10 signature does not verify")
    return _Csr(read.csr, der, read.quirk)
