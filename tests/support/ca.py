"""A CA over a key on the token, as the CA-level tests build it (tests/ca, tests/enroll)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from scepd.ca.authority import CertificateAuthority, self_signed_ca
from scepd.enroll.profiles import Profile
from scepd.keys.base import HashName, Signer

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class WrappedKey:
    """A token key with a test's hook around each signature (a pause, a gate); the signing is the token's."""

    def __init__(self, inner: Signer) -> None:
        self.inner = inner

    @property
    def label(self) -> str:
        return self.inner.label

    @property
    def public_key(self) -> PublicKeyTypes:
        return self.inner.public_key

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        return await self.inner.sign(data, hash)


async def make_ca(signer: Signer, name: str = "CRL test CA", **urls: str) -> CertificateAuthority:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scepd tests")]
    )
    cert = x509.load_der_x509_certificate(
        await self_signed_ca(signer, subject, NOW - dt.timedelta(days=1), dt.timedelta(days=3650))
    )
    return CertificateAuthority(
        certificate=cert,
        signer=signer,
        ra_certificate=cert,
        ra_key=signer,  # type: ignore[arg-type]
        **urls,
    )  # type: ignore[arg-type]


async def issue(ca: CertificateAuthority, cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return x509.load_der_x509_certificate(await ca.sign(ca.template(csr, Profile(), NOW)))
