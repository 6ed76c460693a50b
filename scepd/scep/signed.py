"""CMS SignedData plumbing shared by requests, replies and the test client.

The signature of a SCEP message covers the DER SET OF signed attributes, not
the content; these helpers build that SET, verify it, and find the signer.
Private keys never appear here: signing is the caller's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.keys.base import HashName

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

HASHES: dict[HashName, type[hashes.HashAlgorithm]] = {
    HashName.SHA1: hashes.SHA1,
    HashName.SHA224: hashes.SHA224,
    HashName.SHA256: hashes.SHA256,
    HashName.SHA384: hashes.SHA384,
    HashName.SHA512: hashes.SHA512,
}


def hash_algorithm(name: HashName) -> hashes.HashAlgorithm:
    return HASHES[name]()


def digest(name: HashName, data: bytes) -> bytes:
    return hashlib.new(name.value, data).digest()


def hash_name(algorithm: algos.DigestAlgorithm) -> HashName | None:
    """The HashName of a DigestAlgorithm, or None when it is not one we know."""
    try:
        return HashName(algorithm["algorithm"].native)
    except ValueError:
        return None


def der_set(contents: bytes) -> bytes:
    """Wrap contents as a definite-length universal SET (tag 0x31)."""
    n = len(contents)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x31" + length + contents


def ordered_certificates(certificates: Iterable[bytes]) -> cms.CertificateSet:
    """A CertificateSet kept in the caller's order.

    DER would sort the SET OF, but clients read GetCACert and CertRep bags in
    order (RA before CA, issued certificate first), as OpenSSL writes them;
    a parsed value keeps its bytes, so load it rather than build it.
    """
    return cms.CertificateSet.load(der_set(b"".join(certificates)))


def sorted_attributes(attrs: Iterable[cms.CMSAttribute]) -> cms.CMSAttributes:
    """DER requires a SET OF sorted by encoding; asn1crypto keeps insertion order."""
    return cms.CMSAttributes(sorted(attrs, key=lambda a: a.dump()))


def attribute(oid: str, value: core.Asn1Value) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [value]})


def signed_attrs_candidates(signer_info: cms.SignerInfo) -> list[bytes]:
    """The byte strings the signer may have signed: its own encoding re-tagged as SET,
    then a canonical re-encoding for clients that sent BER or unsorted attributes."""
    attrs = signer_info["signed_attrs"]
    out = [der_set(attrs.contents)]
    canonical = sorted_attributes(attrs.untag().copy()).dump(force=True)
    if canonical not in out:
        out.append(canonical)
    return out


def attribute_values(signer_info: cms.SignerInfo) -> dict[str, list[core.Asn1Value]]:
    """Signed attributes by dotted OID, values loaded as their universal ASN.1 type."""
    out: dict[str, list[core.Asn1Value]] = {}
    for attr in signer_info["signed_attrs"]:
        oid = attr["type"].dotted
        out.setdefault(oid, []).extend(core.load(v.dump()) for v in attr["values"])
    return out


def signature_algorithm(public_key: object, digest_name: HashName) -> algos.SignedDigestAlgorithm:
    """What goes in SignerInfo.signatureAlgorithm: rsaEncryption for RSA (what every
    SCEP client expects), ecdsa-with-SHAx for EC."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"})
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest_name.value}_ecdsa"})
    raise ValueError(f"cannot sign a CMS message with a {type(public_key).__name__} key")


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
            if cert.serial_number == ias["serial_number"].native and cert.issuer == ias["issuer"]:
                return cert
        elif sid.name == "subject_key_identifier":
            ski = sid.chosen.native
            computed = hashlib.sha1(cert.public_key["public_key"].contents[1:]).digest()
            if ski in (cert.key_identifier, computed):
                return cert
    return None


def embedded_certificates(signed_data: cms.SignedData) -> list[asn1_x509.Certificate]:
    certs = signed_data["certificates"]
    if not certs:
        return []
    return [c.chosen for c in certs if c.name == "certificate"]


def issuer_and_serial(certificate: x509.Certificate) -> cms.IssuerAndSerialNumber:
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
    return cms.IssuerAndSerialNumber({"issuer": parsed.issuer, "serial_number": parsed.serial_number})


@dataclass(frozen=True)
class SignedDataDraft:
    """Everything of a SignedData except the signature, so the signing can happen elsewhere."""

    to_be_signed: bytes
    digest: HashName
    encap_content: bytes | None
    signed_attrs: cms.CMSAttributes
    signer_certificate: x509.Certificate
    certificates: tuple[bytes, ...]

    def finish(self, signature: bytes) -> bytes:
        algorithm = signature_algorithm(self.signer_certificate.public_key(), self.digest)
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {"issuer_and_serial_number": issuer_and_serial(self.signer_certificate)}
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": self.digest.value}),
                "signed_attrs": self.signed_attrs,
                "signature_algorithm": algorithm,
                "signature": signature,
            }
        )
        encap: dict[str, object] = {"content_type": "data"}
        if self.encap_content is not None:
            encap["content"] = self.encap_content
        signed_data = cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [algos.DigestAlgorithm({"algorithm": self.digest.value})],
                "encap_content_info": encap,
                "certificates": ordered_certificates(self.certificates),
                "signer_infos": [signer_info],
            }
        )
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def draft_signed_data(
    *,
    content: bytes | None,
    attributes: Iterable[cms.CMSAttribute],
    signer_certificate: x509.Certificate,
    digest_name: HashName,
    certificates: Iterable[bytes],
    include_content_type: bool = True,
) -> SignedDataDraft:
    """Add contentType and messageDigest to `attributes` and fix the bytes to sign.

    With no content the digest is of the empty string, which is what a verifier
    of detached content with nothing attached computes.
    """
    base = [attribute("1.2.840.113549.1.9.4", core.OctetString(digest(digest_name, content or b"")))]
    if include_content_type:
        base.append(attribute("1.2.840.113549.1.9.3", cms.ContentType("data")))
    attrs = sorted_attributes([*base, *attributes])
    signer_der = signer_certificate.public_bytes(Encoding.DER)
    certs = (signer_der, *(c for c in certificates if c != signer_der))
    return SignedDataDraft(
        to_be_signed=attrs.dump(),
        digest=digest_name,
        encap_content=content,
        signed_attrs=attrs,
        signer_certificate=signer_certificate,
        certificates=certs,
    )

