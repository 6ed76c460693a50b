"""The client side of SCEP, on the same codec: build requests, read CertReps.

Deliberately independent of the server's request parser and reply builder
(it parses replies itself), so a test that round-trips through both sides
checks each against the other. Holds an in-process private key, which only a
client or a test may do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd import der, oids
from scepd.keys.base import HashName, OaepParams, RsaPadding, hash_algorithm
from scepd.keys.software import SoftwareKey
from scepd.scep.certs_only import parse_degenerate
from scepd.scep.ciphers import ContentCipher
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from scepd.scep.envelope import build_envelope, parse_envelope
from scepd.scep.errors import MalformedMessage, ScepError
from scepd.scep.message import octets_value, single, text_value
from scepd.scep.signed import (
    ASN1_ERRORS,
    attribute_der,
    attribute_values,
    digest,
    draft_signed_data,
    embedded_certificates,
    find_signer,
    hash_name,
    signed_attrs_candidates,
    verify,
)
from scepd.scep.signed_view import load_signed_data

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_self_signed(key: PrivateKey, subject: x509.Name, now: dt.datetime) -> x509.Certificate:
    """The throw-away signer certificate a client uses before it has a real one."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def build_pki_message(
    *,
    message_type: MessageType,
    payload: bytes,
    transaction_id: str,
    sender_nonce: bytes,
    recipient_certificate: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES256_CBC,
    padding: RsaPadding = RsaPadding.PKCS1V15,
    oaep: OaepParams | None = None,
    signer_certificate: x509.Certificate,
    signer_key: PrivateKey,
    digest: HashName = HashName.SHA256,
    omit_content_type_attr: bool = False,
) -> bytes:
    """A signed, enveloped request; `omit_content_type_attr` imitates a broken client."""
    content = build_envelope(payload, recipient_certificate, cipher=cipher, rsa_padding=padding, oaep=oaep)
    draft = draft_signed_data(
        content=content,
        attributes=[
            attribute_der(oids.SCEP_MESSAGE_TYPE, der.printable_string(message_type.value)),
            attribute_der(oids.SCEP_TRANSACTION_ID, der.printable_string(transaction_id)),
            attribute_der(oids.SCEP_SENDER_NONCE, der.octet_string(sender_nonce)),
        ],
        signer_certificate=signer_certificate,
        digest_name=digest,
        certificates=(),
        include_content_type=not omit_content_type_attr,
    )
    return draft.finish(SoftwareKey(signer_key).sign_now(draft.to_be_signed, digest))


def issuer_and_subject(issuer: x509.Name, subject: x509.Name) -> bytes:
    """CertPoll payload."""
    return der.sequence(issuer.public_bytes(), subject.public_bytes())


def issuer_and_serial(issuer: x509.Name, serial: int) -> bytes:
    """GetCert / GetCRL payload."""
    return der.sequence(issuer.public_bytes(), der.integer(serial))


@dataclass(frozen=True)
class CertRep:
    status: PkiStatus
    fail_info: FailInfo | None
    fail_info_text: str | None
    transaction_id: str
    sender_nonce: bytes
    recipient_nonce: bytes
    message_type: MessageType
    certificates: list[x509.Certificate]
    crls: list[bytes]
    signer_certificate: x509.Certificate
    has_content_type_attr: bool


def _open(content: bytes, key: rsa.RSAPrivateKey) -> bytes:
    env = parse_envelope(content)
    if env.padding is RsaPadding.PKCS1V15:
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        oaep = env.oaep or OaepParams()
        pad = padding.OAEP(
            mgf=padding.MGF1(hash_algorithm(oaep.mgf_hash)),
            algorithm=hash_algorithm(oaep.hash),
            label=oaep.label or None,
        )
    try:
        cek = key.decrypt(env.encrypted_key, pad)
    except ValueError as e:
        raise ScepError(FailInfo.BAD_MESSAGE_CHECK, "the reply envelope is not for this key") from e
    return env.open(cek)


def parse_cert_rep(
    data: bytes,
    *,
    decrypt_key: rsa.RSAPrivateKey | None = None,
    trusted_signers: Sequence[x509.Certificate] | None = None,
) -> CertRep:
    """Verify and read a CertRep; with `decrypt_key`, a SUCCESS payload is opened.

    With `trusted_signers`, the signer must be one of them (an embedded
    certificate is not trusted just because it is embedded).
    """
    signed = load_signed_data(data)
    try:
        return _parse_cert_rep(signed, decrypt_key, trusted_signers)
    except (ScepError, MalformedMessage):
        raise
    except ASN1_ERRORS as e:
        raise MalformedMessage(f"unparseable CertRep: {e}") from e


def _parse_cert_rep(
    signed: cms.SignedData,
    decrypt_key: rsa.RSAPrivateKey | None,
    trusted: Sequence[x509.Certificate] | None,
) -> CertRep:
    if len(signed["signer_infos"]) != 1:
        raise MalformedMessage("a CertRep has exactly one SignerInfo")
    signer_info = signed["signer_infos"][0]
    if trusted is not None:
        candidates = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in trusted]
    else:
        candidates = embedded_certificates(signed)
    found = find_signer(signer_info, candidates)
    if found is None:
        raise ScepError(FailInfo.BAD_CERT_ID, "the CertRep signer is not a known certificate")
    signer_cert = x509.load_der_x509_certificate(found.dump())
    digest_name = hash_name(signer_info["digest_algorithm"])
    if digest_name is None:
        raise ScepError(FailInfo.BAD_ALG, "unknown digest algorithm in the CertRep")
    attrs = attribute_values(signer_info)
    encap = signed["encap_content_info"]
    content = encap["content"].native if encap["content"] else None
    md = single(attrs, oids.MESSAGE_DIGEST)
    if md is None or octets_value(md) != digest(digest_name, content or b""):
        raise ScepError(FailInfo.BAD_MESSAGE_CHECK, "the CertRep messageDigest does not match")
    if not any(
        verify(signer_cert, signer_info["signature_algorithm"], digest_name, signer_info["signature"].native, tbs)
        for tbs in signed_attrs_candidates(signer_info)
    ):
        raise ScepError(FailInfo.BAD_MESSAGE_CHECK, "the CertRep signature does not verify")

    def text(oid: str) -> str | None:
        value = single(attrs, oid)
        return text_value(value) if value is not None else None

    def octets(oid: str) -> bytes:
        value = single(attrs, oid)
        return (octets_value(value) if value is not None else None) or b""

    status = PkiStatus(text(oids.SCEP_PKI_STATUS))
    fail = text(oids.SCEP_FAIL_INFO)
    content_type = single(attrs, oids.CONTENT_TYPE)
    certificates: list[x509.Certificate] = []
    crls: list[bytes] = []
    if status is PkiStatus.SUCCESS and content and decrypt_key is not None:
        certificates, crls = parse_degenerate(_open(content, decrypt_key))
    return CertRep(
        status=status,
        fail_info=FailInfo(fail) if fail is not None else None,
        fail_info_text=text(oids.SCEP_FAIL_INFO_TEXT),
        transaction_id=text(oids.SCEP_TRANSACTION_ID) or "",
        sender_nonce=octets(oids.SCEP_SENDER_NONCE),
        recipient_nonce=octets(oids.SCEP_RECIPIENT_NONCE),
        message_type=MessageType(text(oids.SCEP_MESSAGE_TYPE)),
        certificates=certificates,
        crls=crls,
        signer_certificate=signer_cert,
        has_content_type_attr=isinstance(content_type, core.ObjectIdentifier) and content_type.dotted == oids.DATA,
    )
