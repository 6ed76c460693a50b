"""GetNextCACert reply (RFC 8894 4.7): the rollover CA certificate, signed by the current CA.

The reply is a SignedData whose content is a degenerate certificates-only
SignedData with the new CA certificate (and any new RA certificates). The
current CA key signs it, so a client that trusts today's CA can trust
tomorrow's before the switch. Built in two phases like a CertRep: the draft
holds the bytes to sign, the CA key (on the token) signs them.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from scepd.keys.base import HashName
from scepd.scep.certs_only import build_certs_only
from scepd.scep.signed import SignedDataDraft, draft_signed_data, sign_draft


def build_next_ca_cert(
    certificates: Sequence[bytes], *, signer_certificate: x509.Certificate, digest: HashName = HashName.SHA256
) -> SignedDataDraft:
    if not certificates:
        raise ValueError("GetNextCACert needs at least the next CA certificate")
    return draft_signed_data(
        content=build_certs_only(certificates),
        attributes=(),
        signer_certificate=signer_certificate,
        digest_name=digest,
        certificates=(),
    )


# One signing step for every draft (scepd.scep.signed.sign_draft); the name says what is signed.
sign_next_ca_cert = sign_draft
