"""The CA as the rest of scepd sees it: certificates plus keys behind interfaces.

With an RA (the default since issue 13), the RA key opens envelopes and signs
CertReps, as NDES does, while the CA key only signs certificates, CRLs and
GetNextCACert replies: a key that signs certificates must never decrypt what
strangers send. A lone CA key that also opens envelopes is the layout of
earlier versions; it keeps working, with a warning (docs/keys.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from scepd.ca.certificates import CertificateTemplate, key_identifier, random_serial, sign_certificate
from scepd.ca.crl import Crl, CrlTemplate, sign_crl
from scepd.keys.base import Decrypter, HashName, Signer
from scepd.store.base import RevokedEntry


class KeyAndDecrypter(Signer, Decrypter, Protocol):
    """A key that signs replies and opens envelopes (RSA only)."""


class IssuancePolicy(Protocol):
    """What the CA takes from a certificate profile (`scepd.enroll.profiles.Profile`) to build a certificate.

    Declared here, not imported, so the CA stays below the enrollment chain that uses it.
    """

    @property
    def validity(self) -> dt.timedelta: ...

    def subject(self, csr: x509.CertificateSigningRequest) -> x509.Name: ...

    def extensions(self, csr: x509.CertificateSigningRequest) -> list[x509.Extension[x509.ExtensionType]]: ...


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    signer: Signer
    ra_certificate: x509.Certificate
    ra_key: KeyAndDecrypter
    hash: HashName = HashName.SHA256
    # Where relying parties find revocation status and the CA certificate; when
    # set, every issued certificate points there (CRL DP, AIA).
    crl_url: str | None = None
    ocsp_url: str | None = None
    issuer_url: str | None = None
    # The rollover CA certificate (first) and any new RA certificates, DER, for GetNextCACert.
    next_chain_der: tuple[bytes, ...] = ()

    @property
    def key_id(self) -> bytes:
        """The authority key identifier of everything this CA signs (certificates and CRLs)."""
        return key_identifier(self.signer.public_key).digest

    @property
    def has_ra(self) -> bool:
        return self.ra_certificate != self.certificate

    @property
    def chain_der(self) -> list[bytes]:
        """GetCACert order: RA first, then the CA (RFC 8894 4.2.1.2)."""
        ca = self.certificate.public_bytes(serialization.Encoding.DER)
        if not self.has_ra:
            return [ca]
        return [self.ra_certificate.public_bytes(serialization.Encoding.DER), ca]

    def template(
        self,
        csr: x509.CertificateSigningRequest,
        profile: IssuancePolicy,
        now: dt.datetime,
        serial: int | None = None,
    ) -> CertificateTemplate:
        """The end-entity certificate for `csr` under `profile`, bounded by the CA's own life."""
        not_before = now - dt.timedelta(minutes=5)  # tolerate clients whose clock runs a bit behind
        not_after = min(now + profile.validity, self.certificate.not_valid_after_utc)
        exts = profile.extensions(csr)
        exts.append(x509.Extension(x509.SubjectKeyIdentifier.oid, False, key_identifier(csr.public_key())))
        exts.append(
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                x509.AuthorityKeyIdentifier(self.key_id, None, None),
            )
        )
        exts += self.locator_extensions()
        return CertificateTemplate(
            serial=serial if serial is not None else random_serial(),
            issuer=self.certificate.subject,
            subject=profile.subject(csr),
            public_key=csr.public_key(),
            not_before=not_before,
            not_after=not_after,
            extensions=exts,
        )

    def locator_extensions(self) -> list[x509.Extension[x509.ExtensionType]]:
        """CRL distribution point and authority information access, for the URLs configured."""
        exts: list[x509.Extension[x509.ExtensionType]] = []
        if self.crl_url:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(self.crl_url)], None, None, None)
            exts.append(x509.Extension(x509.CRLDistributionPoints.oid, False, x509.CRLDistributionPoints([point])))
        access = []
        if self.ocsp_url:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp_url)
                )
            )
        if self.issuer_url:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(self.issuer_url)
                )
            )
        if access:
            exts.append(
                x509.Extension(x509.AuthorityInformationAccess.oid, False, x509.AuthorityInformationAccess(access))
            )
        return exts

    async def sign(self, template: CertificateTemplate) -> bytes:
        return await sign_certificate(template, self.signer, self.hash)

    def crl_template(
        self, entries: Sequence[RevokedEntry], number: int, now: dt.datetime, lifetime: dt.timedelta
    ) -> CrlTemplate:
        """This CA's CRL listing `entries`, valid from `now` for `lifetime`."""
        return CrlTemplate(
            issuer=self.certificate.subject,
            authority_key_id=self.key_id,
            number=number,
            this_update=now,
            next_update=now + lifetime,
            entries=entries,
        )

    async def sign_crl(self, template: CrlTemplate) -> Crl:
        return await sign_crl(template, self.signer, self.hash)


def ca_extensions(
    public_key: rsa.RSAPublicKey | object, issuer_key: object | None = None, *, opens_envelopes: bool = False
) -> list[x509.Extension[x509.ExtensionType]]:
    """Extensions of a SCEP CA certificate.

    With an RA (the default layout) the CA key signs and nothing else, so its
    certificate must not invite clients to encrypt to it: no keyEncipherment.
    `opens_envelopes` is the lone-CA layout of earlier versions, where the CA
    key also receives the envelope's content key and signs CertReps.
    """
    ski = key_identifier(public_key)  # type: ignore[arg-type]
    aki_source = key_identifier(issuer_key) if issuer_key is not None else ski  # type: ignore[arg-type]
    return [
        x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=True, path_length=0)),
        x509.Extension(
            x509.KeyUsage.oid,
            True,
            x509.KeyUsage(
                # Kept with an RA too: the CA key still signs CMS besides certificates and CRLs
                # (GetNextCACert's SignedData, RFC 8894), RFC 5280 4.2.1.3 asks digitalSignature
                # for that, and OpenSSL's S/MIME signing purpose (`openssl cms -verify`) rejects a
                # signer without it. It permits signing only, so it opens no oracle.
                digital_signature=True,
                content_commitment=False,
                key_encipherment=opens_envelopes,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
        ),
        x509.Extension(x509.SubjectKeyIdentifier.oid, False, ski),
        x509.Extension(
            x509.AuthorityKeyIdentifier.oid,
            False,
            x509.AuthorityKeyIdentifier(aki_source.digest, None, None),
        ),
    ]


def ra_extensions(public_key: object, ca_public_key: object) -> list[x509.Extension[x509.ExtensionType]]:
    """An RA certificate: signs CertReps and receives envelopes; not a CA."""
    return [
        x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)),
        x509.Extension(
            x509.KeyUsage.oid,
            True,
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
        ),
        x509.Extension(x509.SubjectKeyIdentifier.oid, False, key_identifier(public_key)),  # type: ignore[arg-type]
        x509.Extension(
            x509.AuthorityKeyIdentifier.oid,
            False,
            x509.AuthorityKeyIdentifier(key_identifier(ca_public_key).digest, None, None),  # type: ignore[arg-type]
        ),
    ]


async def self_signed(
    signer: Signer,
    subject: x509.Name,
    now: dt.datetime,
    validity: dt.timedelta,
    extensions: Sequence[x509.Extension[x509.ExtensionType]],
    hash: HashName = HashName.SHA256,
) -> bytes:
    """A certificate for the signer's own key, signed by it (a root CA, an app credential)."""
    template = CertificateTemplate(
        serial=random_serial(),
        issuer=subject,
        subject=subject,
        public_key=signer.public_key,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + validity,
        extensions=extensions,
    )
    return await sign_certificate(template, signer, hash)


async def self_signed_ca(
    signer: Signer,
    subject: x509.Name,
    now: dt.datetime,
    validity: dt.timedelta,
    hash: HashName = HashName.SHA256,
    *,
    opens_envelopes: bool = False,
) -> bytes:
    return await self_signed(
        signer, subject, now, validity, ca_extensions(signer.public_key, opens_envelopes=opens_envelopes), hash
    )


async def ra_certificate(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    ra_public_key: object,
    subject: x509.Name,
    now: dt.datetime,
    validity: dt.timedelta,
    hash: HashName = HashName.SHA256,
) -> bytes:
    """A certificate for the RA key, issued by the CA and ending no later than the CA's own."""
    template = CertificateTemplate(
        serial=random_serial(),
        issuer=ca_certificate.subject,
        subject=subject,
        public_key=ra_public_key,  # type: ignore[arg-type]
        not_before=now - dt.timedelta(minutes=5),
        not_after=min(now + validity, ca_certificate.not_valid_after_utc),
        extensions=ra_extensions(ra_public_key, ca_signer.public_key),
    )
    return await sign_certificate(template, ca_signer, hash)
