"""Incoming SCEP pkiMessage (RFC 8894 3.2): a signed envelope plus SCEP attributes.

Parsing collects the transactionID, senderNonce, messageType and signer
certificate first, so that any later failure can still be answered with a
signed FAILURE CertRep addressed to the requester.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.name import _ASN1Type

from scepd import oids
from scepd.keys.base import HashName
from scepd.scep.constants import FailInfo, MessageType
from scepd.scep.envelope import Envelope, parse_envelope
from scepd.scep.errors import MalformedMessage, ScepError
from scepd.scep.signed import ASN1_ERRORS, digest, hash_name, verify
from scepd.scep.signed_view import SignedView, read_signed

DEFAULT_HASHES = frozenset({HashName.SHA1, HashName.SHA256, HashName.SHA512, HashName.SHA224, HashName.SHA384})


@dataclass(frozen=True)
class PkiMessage:
    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    signer_certificate: x509.Certificate
    digest: HashName
    envelope: Envelope | None
    raw: bytes = field(repr=False)


def text_value(value: core.Asn1Value) -> str | None:
    """SCEP strings are PrintableString, but clients send UTF8/IA5 too; accept any string type."""
    if isinstance(value, core.AbstractString):
        native = value.native
        return native if isinstance(native, str) else None
    return None


def octets_value(value: core.Asn1Value) -> bytes | None:
    if isinstance(value, core.OctetString):
        native = value.native
        return native if isinstance(native, bytes) else None
    return None


def single(attrs: dict[str, list[core.Asn1Value]], oid: str) -> core.Asn1Value | None:
    values = attrs.get(oid)
    return values[0] if values and len(values) == 1 else None


def parse_pki_message(data: bytes, *, allowed_hashes: frozenset[HashName] = DEFAULT_HASHES) -> PkiMessage:
    """Parse and verify a request; the envelope is returned still closed."""
    signed = read_signed(data)
    learned: dict[str, object] = {}
    try:
        return _parse(data, signed, allowed_hashes, learned)
    except (ScepError, MalformedMessage):
        raise
    except ASN1_ERRORS as e:
        raise ScepError(FailInfo.BAD_REQUEST, f"malformed request: {e}", **learned) from e  # type: ignore[arg-type]


def _parse(data: bytes, signed: SignedView, allowed: frozenset[HashName], learned: dict[str, object]) -> PkiMessage:
    def fail(info: FailInfo, reason: str) -> ScepError:
        return ScepError(info, reason, **learned)  # type: ignore[arg-type]

    if signed.signer_count != 1:
        raise MalformedMessage(f"expected one SignerInfo, found {signed.signer_count}")
    attrs = signed.attributes()
    if not attrs:
        raise fail(FailInfo.BAD_REQUEST, "the request has no signed attributes")

    tid = single(attrs, oids.SCEP_TRANSACTION_ID)
    transaction_id = text_value(tid) if tid is not None else None
    if transaction_id:
        learned["transaction_id"] = transaction_id
    nonce = single(attrs, oids.SCEP_SENDER_NONCE)
    sender_nonce = octets_value(nonce) if nonce is not None else None
    if sender_nonce:
        learned["sender_nonce"] = sender_nonce
    mt = single(attrs, oids.SCEP_MESSAGE_TYPE)
    mt_text = text_value(mt) if mt is not None else None
    message_type: MessageType | None = None
    if mt_text is not None:
        try:
            message_type = MessageType(mt_text.strip())
        except ValueError:
            pass
    if message_type is not None:
        learned["message_type"] = message_type

    signer_der = signed.signer_der()
    if signer_der is None:
        raise fail(FailInfo.BAD_CERT_ID, "the signer certificate is not in the message")
    try:
        signer_cert = x509.load_der_x509_certificate(signer_der)
        # cryptography reads the names lazily, and nothing signed covers this certificate: fail here,
        # not in a step that has signed a certificate by then (found by bench/fuzz.py).
        signer_cert.subject, signer_cert.issuer  # noqa: B018
    except ASN1_ERRORS as e:
        raise fail(FailInfo.BAD_CERT_ID, f"the signer certificate does not parse: {e}") from e
    learned["signer_certificate"] = signer_cert

    if not transaction_id:
        raise fail(FailInfo.BAD_REQUEST, "missing transactionID")
    if not sender_nonce:
        raise fail(FailInfo.BAD_REQUEST, "missing senderNonce")
    if message_type is None:
        raise fail(FailInfo.BAD_REQUEST, f"missing or unknown messageType {mt_text!r}")

    digest_algorithm = signed.digest_algorithm()
    digest_name = hash_name(digest_algorithm)
    if digest_name is None or digest_name not in allowed:
        raise fail(FailInfo.BAD_ALG, f"digest algorithm {digest_algorithm['algorithm'].dotted} is not allowed")

    content_type_oid, content = signed.encapsulated()
    if content_type_oid != oids.DATA:
        raise fail(FailInfo.BAD_REQUEST, "the encapsulated content type is not id-data")
    if content is not None and not isinstance(content, bytes):
        raise fail(FailInfo.BAD_REQUEST, "the encapsulated content is not an OCTET STRING")

    content_type = single(attrs, oids.CONTENT_TYPE)
    if not isinstance(content_type, core.ObjectIdentifier) or content_type.dotted != oids.DATA:
        raise fail(FailInfo.BAD_MESSAGE_CHECK, "the contentType attribute is missing or not id-data")
    message_digest = single(attrs, oids.MESSAGE_DIGEST)
    if message_digest is None or octets_value(message_digest) != digest(digest_name, content or b""):
        raise fail(FailInfo.BAD_MESSAGE_CHECK, "the messageDigest does not match the content")

    signature = signed.signature()
    algorithm = signed.signature_algorithm()
    if not any(verify(signer_cert, algorithm, digest_name, signature, tbs) for tbs in signed.to_be_signed()):
        raise fail(FailInfo.BAD_MESSAGE_CHECK, "the signature does not verify with the signer certificate")

    envelope = parse_envelope_learned(content, learned) if content else None
    return PkiMessage(
        message_type=message_type,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        signer_certificate=signer_cert,
        digest=digest_name,
        envelope=envelope,
        raw=data,
    )


def parse_envelope_learned(content: bytes, learned: dict[str, object]) -> Envelope:
    try:
        return parse_envelope(content)
    except ScepError as e:
        raise ScepError(e.fail_info, e.reason, **learned) from e  # type: ignore[arg-type]


class IssuerAndSubject(core.Sequence):  # type: ignore[misc]
    """RFC 8894 3.3.3: the CertPoll payload."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


_STRING_TYPES: dict[type[core.Asn1Value], _ASN1Type] = {
    core.PrintableString: _ASN1Type.PrintableString,
    core.UTF8String: _ASN1Type.UTF8String,
    core.IA5String: _ASN1Type.IA5String,
    core.TeletexString: _ASN1Type.T61String,
    core.BMPString: _ASN1Type.BMPString,
    core.UniversalString: _ASN1Type.UniversalString,
    core.VisibleString: _ASN1Type.VisibleString,
}


def to_name(name: asn1_x509.Name) -> x509.Name:
    """cryptography has no DER Name loader; rebuild it attribute by attribute."""
    rdns = []
    for rdn in name.chosen:
        attrs = []
        for atv in rdn:
            value = core.load(atv["value"].dump())
            text = value.native
            if not isinstance(text, str):
                raise ValueError("a Name attribute is not a string")
            oid = x509.ObjectIdentifier(atv["type"].dotted)
            kind = _STRING_TYPES.get(type(value))
            attrs.append(x509.NameAttribute(oid, text, kind) if kind is not None else x509.NameAttribute(oid, text))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def parse_issuer_and_subject(der: bytes) -> tuple[x509.Name, x509.Name]:
    """CertPoll payload (IssuerAndSubject); BAD_REQUEST when it is not one."""
    try:
        parsed = IssuerAndSubject.load(der, strict=True)
        return to_name(parsed["issuer"]), to_name(parsed["subject"])
    except ASN1_ERRORS as e:
        raise ScepError(FailInfo.BAD_REQUEST, f"not an IssuerAndSubject: {e}") from e


def parse_issuer_and_serial(der: bytes) -> tuple[x509.Name, int]:
    """GetCert/GetCRL payload (IssuerAndSerialNumber); BAD_REQUEST when it is not one."""
    try:
        parsed = cms.IssuerAndSerialNumber.load(der, strict=True)
        serial = parsed["serial_number"].native
        if not isinstance(serial, int):
            raise ValueError("no serial number")
        return to_name(parsed["issuer"]), serial
    except ASN1_ERRORS as e:
        raise ScepError(FailInfo.BAD_REQUEST, f"not an IssuerAndSerialNumber: {e}") from e
