"""Building and signing X.509 structures with a key we never hold.

`cryptography`'s builders want the private key in process, but ours lives on a
token. So `cryptography` encodes each extension value (it does that well and
strictly), asn1crypto assembles the TBSCertificate / CertificationRequestInfo /
TBSCertList around them, and the `Signer` signs the DER on the token.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scepd import der, oids
from scepd.keys.base import HashName, Signer

# RFC 5280 4.1.2.2: at most 20 octets; CA/B Forum asks for at least 64 random bits.
_SERIAL_BITS = 127


def random_serial() -> int:
    """A positive serial with 126 random bits; the top bit fixes its length to 16 octets."""
    return secrets.randbits(_SERIAL_BITS - 1) | (1 << (_SERIAL_BITS - 1))


@dataclass(frozen=True)
class CertificateTemplate:
    """Everything that goes into a certificate except the signature."""

    serial: int
    issuer: x509.Name
    subject: x509.Name
    public_key: PublicKeyTypes
    not_before: dt.datetime
    not_after: dt.datetime
    extensions: Sequence[x509.Extension[x509.ExtensionType]]


async def sign_certificate(template: CertificateTemplate, signer: Signer, hash: HashName = HashName.SHA256) -> bytes:
    """Return the DER certificate, its TBSCertificate signed by `signer`.

    Assembled from DER parts (scepd.der): names, key and extension values come
    encoded from `cryptography`; this runs once per enrollment.
    """
    sig_alg = signature_algorithm_der(signer.public_key, hash)
    extensions = b""
    if template.extensions:
        extensions = der.context(3, der.sequence(*(_extension_der(e) for e in template.extensions)))
    tbs_der = der.sequence(
        der.context(0, der.integer(2)),  # v3
        der.integer(template.serial),
        sig_alg,
        template.issuer.public_bytes(),
        der.sequence(der.x509_time(template.not_before), der.x509_time(template.not_after)),
        template.subject.public_bytes(),
        template.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        extensions,
    )
    signature = await signer.sign(tbs_der, hash)
    return der.sequence(tbs_der, sig_alg, der.bit_string(signature))


def _extension_der(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    # DER leaves out a BOOLEAN that equals its DEFAULT (critical FALSE).
    critical = b"\x01\x01\xff" if ext.critical else b""
    return der.sequence(der.oid(ext.oid.dotted_string), critical, der.octet_string(ext.value.public_bytes()))


@lru_cache(maxsize=16)
def _signature_algorithm_der(kind: str, hash: HashName) -> bytes:
    if kind == "ecdsa":
        return der.algorithm(oids.ECDSA_WITH[hash.value], None)  # no parameters (RFC 5758)
    # NULL parameters (RFC 4055), except after sha1WithRSAEncryption, as scepd has always written it.
    return der.algorithm(oids.RSA_WITH[hash.value], None if hash is HashName.SHA1 else der.NULL)


def signature_algorithm_der(public_key: PublicKeyTypes, hash: HashName) -> bytes:
    """`signature_algorithm` encoded, cached: it is the same for every certificate."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return _signature_algorithm_der("rsa", hash)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _signature_algorithm_der("ecdsa", hash)
    raise ValueError(f"unsupported signing key type {type(public_key).__name__}")


async def sign_csr(
    subject: x509.Name,
    signer: Signer,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    hash: HashName = HashName.SHA256,
) -> bytes:
    """A PKCS#10 request (RFC 2986) for the token key, for an enterprise root to sign."""
    spki = signer.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    attributes = b""
    if extensions:  # one extensionRequest attribute (RFC 2985 5.4.2) holding the Extensions
        requested = der.sequence(*(_extension_der(e) for e in extensions))
        attributes = der.sequence(der.oid(oids.EXTENSION_REQUEST), der.set_of([requested]))
    info = der.sequence(der.integer(0), subject.public_bytes(), spki, der.context(0, attributes))
    signature = await signer.sign(info, hash)
    return der.sequence(info, signature_algorithm_der(signer.public_key, hash), der.bit_string(signature))


def key_identifier(public_key: PublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]
