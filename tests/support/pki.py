"""Real keys, CSRs and certificates for the challenge tests (EC P-256: fast)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AttributeOID, NameOID

from scepd.enroll.pipeline import Enrollment, Issued
from scepd.scep.constants import MessageType
from scepd.store.base import CertificateRecord, CertStatus

UTC = dt.UTC
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scepd tests")]
    )


class Ca:
    def __init__(self, cn: str = "scepd test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=365))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        cn: str,
        not_before: dt.datetime = NOW - dt.timedelta(days=30),
        not_after: dt.datetime = NOW + dt.timedelta(days=335),
        serial: int | None = None,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .sign(self.key, hashes.SHA256())
        )


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def self_signed(k: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(k, hashes.SHA256())
    )


def csr(k: ec.EllipticCurvePrivateKey, cn: str, challenge: bytes | None) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(cn))
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge)
    return builder.sign(k, hashes.SHA256())


def enrollment(
    request: x509.CertificateSigningRequest,
    signer: x509.Certificate,
    now: dt.datetime = NOW,
    transaction_id: str | None = None,
    message_type: MessageType = MessageType.PKCS_REQ,
) -> Enrollment:
    return Enrollment(
        transaction_id=transaction_id or secrets.token_hex(16),
        message_type=message_type,
        csr=request,
        csr_der=request.public_bytes(Encoding.DER),
        signer_certificate=signer,
        now=now,
    )


def record_for(
    cert: x509.Certificate, transaction_id: str = "earlier", csr_der: bytes = b"", renewal_of: int | None = None
) -> CertificateRecord:
    return CertificateRecord(
        serial=cert.serial_number,
        transaction_id=transaction_id,
        subject=cert.subject.rfc4514_string(),
        requester=cert.subject.rfc4514_string(),
        csr_sha256=hashlib.sha256(csr_der).hexdigest(),
        profile="default",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issued_at=cert.not_valid_before_utc,
        status=CertStatus.VALID,
        der=cert.public_bytes(Encoding.DER),
        renewal_of=renewal_of,
    )


class Terminal:
    """The end of the chain: signs the CSR with the CA and records what it saw."""

    def __init__(self, ca: Ca) -> None:
        self.ca = ca
        self.seen: list[Enrollment] = []
        self.modes: list[str] = []

    async def __call__(self, e: Enrollment) -> Issued:
        self.seen.append(e)
        self.modes.append(e.challenge_mode)
        cert = self.ca.issue(e.csr.public_key(), "issued")  # type: ignore[arg-type]
        return Issued(cert, cert.public_bytes(Encoding.DER), cert.serial_number, e)


def failing(exc: Exception) -> Callable[[Enrollment], object]:
    async def next(e: Enrollment) -> Issued:
        raise exc

    return next
