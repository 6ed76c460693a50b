"""Degenerate certs-only SignedData (RFC 8894 3.4, 4.2.1.2): a bag of certificates.

Used for GetCACert with an RA, and as the payload of a successful CertRep.
"""

from __future__ import annotations

from collections.abc import Sequence

from asn1crypto import cms
from cryptography import x509

from scepd.keys.base import HashName
from scepd.scep.errors import MalformedMessage
from scepd.scep.signed import ASN1_ERRORS, signed_data_der


def build_degenerate(certificates: Sequence[bytes], crls: Sequence[bytes] = ()) -> bytes:
    """DER ContentInfo(SignedData) with no signers and no content; certificates in the given order."""
    return signed_data_der(
        digest_name=HashName.SHA256,
        content=None,
        certificates=certificates,
        crls=crls,
        signer_infos=[],
        digest_algorithms=[],
    )


def build_certs_only(certificates: Sequence[bytes]) -> bytes:
    return build_degenerate(certificates)


def parse_degenerate(data: bytes) -> tuple[list[x509.Certificate], list[bytes]]:
    """Certificates (in order) and DER CRLs of a certs-only SignedData."""
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("not a CMS SignedData")
        signed = info["content"]
        certs = [
            x509.load_der_x509_certificate(c.chosen.dump())
            for c in (signed["certificates"] or [])
            if c.name == "certificate"
        ]
        crls = [c.chosen.dump() for c in (signed["crls"] or []) if c.name == "crl"]
    except MalformedMessage:
        raise
    except ASN1_ERRORS as e:
        raise MalformedMessage(f"not a certs-only SignedData: {e}") from e
    return certs, crls


def parse_certs_only(data: bytes) -> list[x509.Certificate]:
    return parse_degenerate(data)[0]
