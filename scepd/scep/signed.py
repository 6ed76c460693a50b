"""CMS SignedData plumbing shared by requests, replies and the test client.

The signature of a SCEP message covers the DER SET OF signed attributes, not
the content; these helpers build that SET, verify it, and find the signer.
Private keys never appear here: signing is the caller's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd import der, oids, strict_der
from scepd.keys.base import HashName, Signer, hash_algorithm

# asn1crypto parses lazily, so a malformed field surfaces as one of these at first
# access; cryptography adds its own two for certificates it cannot represent.
ASN1_ERRORS: tuple[type[Exception], ...] = (
    x509.InvalidVersion,
    UnsupportedAlgorithm,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnicodeError,
)


def digest(name: HashName, data: bytes) -> bytes:
    return hashlib.new(name.value, data).digest()


def hash_name(algorithm: algos.DigestAlgorithm) -> HashName | None:
    """The HashName of a DigestAlgorithm, or None when it is not one we know."""
    try:
        return HashName(algorithm["algorithm"].native)
    except ValueError:
        return None


def sorted_attributes(attrs: Iterable[cms.CMSAttribute]) -> cms.CMSAttributes:
    """DER requires a SET OF sorted by encoding; asn1crypto keeps insertion order."""
    return cms.CMSAttributes(sorted(attrs, key=lambda a: a.dump()))


def signed_attrs_candidates(signer_info: cms.SignerInfo) -> Iterator[bytes]:
    """The byte strings the signer may have signed: its own encoding re-tagged as SET,
    then a canonical re-encoding for clients that sent BER or unsorted attributes.

    Lazy: the re-encoding is costly and almost never needed, so callers that stop
    at the first candidate that verifies never pay for it.
    """
    attrs = signer_info["signed_attrs"]
    first = der.tlv(der.SET, attrs.contents)
    yield first
    canonical = sorted_attributes(attrs.untag().copy()).dump(force=True)
    if canonical != first:
        yield canonical


def attribute_values(signer_info: cms.SignerInfo) -> dict[str, list[core.Asn1Value]]:
    """Signed attributes by dotted OID, values loaded as their universal ASN.1 type."""
    out: dict[str, list[core.Asn1Value]] = {}
    for attr in signer_info["signed_attrs"]:
        oid = attr["type"].dotted
        out.setdefault(oid, []).extend(core.load(v.dump()) for v in attr["values"])
    return out


def verify(
    certificate: x509.Certificate,
    algorithm: algos.SignedDigestAlgorithm,
    digest_name: HashName,
    signature: bytes,
    data: bytes,
) -> bool:
    """True when `signature` over `data` verifies with the certificate's key."""
    try:
        key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return False
    chosen = hash_algorithm(digest_name)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algorithm["algorithm"].native == "rsassa_pss":
                params = algorithm["parameters"]
                pss_hash = HashName(params["hash_algorithm"]["algorithm"].native)
                mgf_hash = HashName(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(hash_algorithm(mgf_hash)),
                    salt_length=params["salt_length"].native,
                )
                chosen = hash_algorithm(pss_hash)
            else:
                pad = padding.PKCS1v15()
            key.verify(signature, data, pad, chosen)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(chosen))
        else:
            return False
    except InvalidSignature:
        return False
    except ASN1_ERRORS:
        return False
    return True


def find_signer(
    signer_info: cms.SignerInfo, candidates: Sequence[asn1_x509.Certificate]
) -> asn1_x509.Certificate | None:
    """The certificate named by the SignerIdentifier, by issuer+serial or SKI."""
    sid = signer_info["sid"]
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if cert.serial_number != ias["serial_number"].native:
                continue
            # Byte-equal names are equal; only otherwise pay for RFC 4518 comparison.
            if cert.issuer.dump() == ias["issuer"].dump() or cert.issuer == ias["issuer"]:
                return cert
        elif sid.name == "subject_key_identifier" and key_identifier_matches(cert, sid.chosen.native):
            return cert
    return None


def key_identifier_matches(cert: asn1_x509.Certificate, ski: bytes) -> bool:
    """The certificate's subjectKeyIdentifier, or the SHA-1 of its key (RFC 5280 4.2.1.2 method 1), is `ski`."""
    computed = hashlib.sha1(cert.public_key["public_key"].contents[1:]).digest()
    return ski in (cert.key_identifier, computed)


def embedded_certificates(signed_data: cms.SignedData) -> list[asn1_x509.Certificate]:
    certs = signed_data["certificates"]
    if not certs:
        return []
    return [c.chosen for c in certs if c.name == "certificate"]


@lru_cache(maxsize=64)
def issuer_and_serial_der(certificate: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer exactly as the certificate encodes it.

    Cached: the RA certificate names itself in every reply.
    """
    data = certificate.public_bytes(Encoding.DER)
    try:
        return der.sequence(*strict_der.issuer_and_serial(data))
    except (ValueError, IndexError):  # not strict DER (cryptography accepts a little BER)
        tbs = asn1_x509.Certificate.load(data)["tbs_certificate"]
        return der.sequence(tbs["issuer"].dump(), tbs["serial_number"].dump())


@lru_cache(maxsize=16)
def digest_algorithm_der(name: HashName) -> bytes:
    return der.algorithm(oids.DIGEST[name.value])  # with NULL parameters


def signature_algorithm_der(public_key: object, digest_name: HashName) -> bytes:
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RSA_SIGNATURE_ALGORITHM
    return _ecdsa_signature_algorithm(digest_name)


@lru_cache(maxsize=16)
def _ecdsa_signature_algorithm(digest_name: HashName) -> bytes:
    return der.algorithm(oids.ECDSA_WITH[digest_name.value], None)


# A CMS SignerInfo names RSA PKCS#1 v1.5 by rsaEncryption (RFC 3370 3.2), the digest being separate.
_RSA_SIGNATURE_ALGORITHM = der.algorithm(oids.RSA_ENCRYPTION)
_OID_DATA = der.oid(oids.DATA)
_OID_SIGNED_DATA = der.oid(oids.SIGNED_DATA)


def attribute_der(oid: str, value: bytes) -> bytes:
    """One CMS Attribute with a single, already encoded, value."""
    return der.sequence(der.oid(oid), der.set_of([value]))


def signed_data_der(
    *,
    digest_name: HashName,
    content: bytes | None,
    certificates: Sequence[bytes],
    signer_infos: Sequence[bytes],
    crls: Sequence[bytes] = (),
    digest_algorithms: Sequence[bytes] | None = None,
) -> bytes:
    """ContentInfo(SignedData v1) over id-data; certificates kept in the given order."""
    encap = der.sequence(_OID_DATA, der.context(0, der.octet_string(content)) if content is not None else b"")
    signed_data = der.sequence(
        der.integer(1),
        der.set_of(digest_algorithms if digest_algorithms is not None else [digest_algorithm_der(digest_name)]),
        encap,
        der.context(0, b"".join(certificates)) if certificates else b"",
        der.context(1, b"".join(crls)) if crls else b"",
        der.set_of(signer_infos),
    )
    return der.sequence(_OID_SIGNED_DATA, der.context(0, signed_data))


@dataclass(frozen=True)
class SignedDataDraft:
    """Everything of a SignedData except the signature, so the signing can happen elsewhere."""

    to_be_signed: bytes  # the DER SET OF signed attributes
    digest: HashName
    encap_content: bytes | None
    signer_certificate: x509.Certificate
    certificates: tuple[bytes, ...]

    def finish(self, signature: bytes) -> bytes:
        signer_info = der.sequence(
            der.integer(1),
            issuer_and_serial_der(self.signer_certificate),
            digest_algorithm_der(self.digest),
            # [0] IMPLICIT SignedAttributes: the same content under a context tag.
            bytes([der.CONTEXT_0]) + self.to_be_signed[1:],
            signature_algorithm_der(self.signer_certificate.public_key(), self.digest),
            der.octet_string(signature),
        )
        return signed_data_der(
            digest_name=self.digest,
            content=self.encap_content,
            certificates=self.certificates,
            signer_infos=[signer_info],
        )


class Draft(Protocol):
    """A SignedData (a CertRep, a GetNextCACert reply) waiting for its signature."""

    @property
    def to_be_signed(self) -> bytes: ...

    @property
    def digest(self) -> HashName: ...

    def finish(self, signature: bytes) -> bytes: ...


async def sign_draft(draft: Draft, signer: Signer) -> bytes:
    """Sign `draft` with `signer` (the token, off the event loop) and return the finished DER."""
    return draft.finish(await signer.sign(draft.to_be_signed, draft.digest))


def draft_signed_data(
    *,
    content: bytes | None,
    attributes: Iterable[bytes],
    signer_certificate: x509.Certificate,
    digest_name: HashName,
    certificates: Iterable[bytes],
    include_content_type: bool = True,
) -> SignedDataDraft:
    """Add contentType and messageDigest to `attributes` and fix the bytes to sign.

    Attributes are DER (`attribute_der`) or asn1crypto values. With no content the
    digest is of the empty string, which is what a verifier of detached content
    with nothing attached computes.
    """
    encoded = list(attributes)
    encoded.append(attribute_der(oids.MESSAGE_DIGEST, der.octet_string(digest(digest_name, content or b""))))
    if include_content_type:
        encoded.append(attribute_der(oids.CONTENT_TYPE, _OID_DATA))
    signer_der = signer_certificate.public_bytes(Encoding.DER)
    certs = (signer_der, *(c for c in certificates if c != signer_der))
    return SignedDataDraft(
        to_be_signed=der.set_of(encoded),
        digest=digest_name,
        encap_content=content,
        signer_certificate=signer_certificate,
        certificates=certs,
    )
