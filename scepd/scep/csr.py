"""Reading the PKCS#10 request a pkcsPKIEnvelope carries, including clients' quirks.

Some clients put a nonzero version in CertificationRequestInfo (a macOS
client sends 2; RFC 2986 only defines v1 = 0). cryptography refuses such a
request outright. scepd accepts it when its signature verifies over the bytes
exactly as sent: the version is rewritten to 0 only in the copy handed to
cryptography for reading names, attributes and the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scepd.keys.base import hash_algorithm
from scepd.scep.signed import ASN1_ERRORS

_READ_ERRORS: tuple[type[Exception], ...] = (ValueError, *ASN1_ERRORS)


@dataclass(frozen=True)
class CsrRead:
    csr: x509.CertificateSigningRequest
    signature_valid: bool
    quirk: str | None = None  # what was tolerated, for the log ("nonzero version 2")


def read_csr(der: bytes) -> CsrRead | None:
    """The request in `der`, or None when it is not a PKCS#10 request at all."""
    try:
        csr = x509.load_der_x509_csr(der)
    except x509.InvalidVersion:
        return _nonzero_version(der)
    except ValueError:
        return None
    try:
        valid = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - cryptography raises for key types it cannot verify
        valid = False
    return CsrRead(csr, valid)


def _nonzero_version(der: bytes) -> CsrRead | None:
    try:
        request = asn1_csr.CertificationRequest.load(der, strict=True)
        info = request["certification_request_info"]
        version = info["version"].native  # an int: asn1crypto names only v1 (0)
        signed_bytes = info.dump()  # as received: asn1crypto keeps the original encoding
        algorithm = request["signature_algorithm"]
        signature = request["signature"].native
        patched = asn1_csr.CertificationRequest.load(der)
        patched["certification_request_info"]["version"] = 0
        csr = x509.load_der_x509_csr(patched.dump(force=True))
    except _READ_ERRORS:
        return None
    return CsrRead(csr, _verify(csr, signed_bytes, algorithm, signature), quirk=f"nonzero version {version}")


def _verify(csr: x509.CertificateSigningRequest, data: bytes, algorithm: object, signature: bytes) -> bool:
    try:
        key = csr.public_key()
        name = algorithm["algorithm"].native  # type: ignore[index]
        digest = hash_algorithm(algorithm.hash_algo)  # type: ignore[attr-defined]
        if isinstance(key, rsa.RSAPublicKey) and name.endswith("_rsa"):
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and name.endswith("_ecdsa"):
            key.verify(signature, data, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False
    return True
