"""What Intune reads out of the forwarded PKCS#10 (§4, §7): the challenge, the
subject, the SANs, the key.

Expected subjects are RFC 4514 strings (`CN=device1,O=Contoso`, most specific
RDN first, as `x509.Name.rfc4514_string()` writes them); they are parsed and
compared as names, RDN order and attribute values exactly. SANs are written
`kind:value` with kind one of dns, email, uri, ip, upn (the Microsoft UPN
otherName), dirname (an RFC 4514 name), rid.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
from dataclasses import dataclass

from asn1crypto import core  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AttributeOID, ObjectIdentifier

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SAN_KINDS = ("dns", "email", "uri", "ip", "upn", "dirname", "rid")


class CsrDecodeError(ValueError):
    """certificateRequest is not standard base64 of a DER PKCS#10."""


def decode_csr(text: object) -> x509.CertificateSigningRequest:
    """Strict: standard base64 without line breaks or PEM armour, then DER (§4)."""
    if not isinstance(text, str) or not text:
        raise CsrDecodeError("certificateRequest is empty or not a string")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CsrDecodeError(f"certificateRequest is not base64: {e}") from e
    try:
        csr = x509.load_der_x509_csr(der)
        csr.extensions  # noqa: B018 - parse now, so a broken extensionRequest counts as undecodable
    except ValueError as e:
        raise CsrDecodeError(f"certificateRequest is not a DER PKCS#10: {e}") from e
    return csr


@dataclass(frozen=True)
class ReadCsr:
    """A decoded certificateRequest and what the fake checks on it, worked out once."""

    csr: x509.CertificateSigningRequest
    der: bytes  # re-encoded by cryptography, so two encodings of one request compare equal
    signature_valid: bool
    password: str | None  # the challengePassword, if any


@functools.lru_cache(maxsize=1024)
def read_csr(text: str) -> ReadCsr:
    """`decode_csr` and the checks on it, remembered for the last requests seen: a success or
    failure notification carries the very request validateRequest decoded a moment before.
    Raises CsrDecodeError (not remembered)."""
    csr = decode_csr(text)
    return ReadCsr(csr, csr.public_bytes(Encoding.DER), csr.is_signature_valid, challenge_password(csr))


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The PKCS#9 challengePassword attribute (1.2.840.113549.1.9.7), if any."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return None
    try:
        return attribute.value.decode("utf-8")
    except UnicodeDecodeError:
        return attribute.value.decode("latin-1")


def parse_subject(expected: str) -> x509.Name:
    """Raises ValueError for a string that is not RFC 4514."""
    return x509.Name.from_rfc4514_string(expected)


def normalise_san(text: str) -> str:
    """`kind:value` with a known kind, DNS names lower-cased, IPs in canonical form."""
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in SAN_KINDS or not value:
        raise ValueError(f"SAN {text!r} is not kind:value with kind one of {', '.join(SAN_KINDS)}")
    if kind == "dns":
        value = value.lower()
    elif kind == "ip":
        value = str(ipaddress.ip_address(value))
    elif kind == "dirname":
        value = x509.Name.from_rfc4514_string(value).rfc4514_string()
    return f"{kind}:{value}"


def _san_string(general_name: x509.GeneralName) -> str:
    if isinstance(general_name, x509.DNSName):
        return f"dns:{general_name.value.lower()}"
    if isinstance(general_name, x509.RFC822Name):
        return f"email:{general_name.value}"
    if isinstance(general_name, x509.UniformResourceIdentifier):
        return f"uri:{general_name.value}"
    if isinstance(general_name, x509.IPAddress):
        return f"ip:{general_name.value}"
    if isinstance(general_name, x509.DirectoryName):
        return f"dirname:{general_name.value.rfc4514_string()}"
    if isinstance(general_name, x509.RegisteredID):
        return f"rid:{general_name.value.dotted_string}"
    if isinstance(general_name, x509.OtherName) and general_name.type_id == UPN_OID:
        try:
            return f"upn:{core.UTF8String.load(general_name.value).native}"
        except ValueError:
            pass
    if isinstance(general_name, x509.OtherName):
        return f"othername:{general_name.type_id.dotted_string}:{general_name.value.hex()}"
    return f"unknown:{general_name!r}"


def csr_sans(csr: x509.CertificateSigningRequest) -> list[str]:
    """The CSR's requested SANs (extensionRequest), in the `kind:value` notation."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [_san_string(name) for name in extension.value]


def rsa_key_size(csr: x509.CertificateSigningRequest) -> int | None:
    key = csr.public_key()
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None
