"""Where issued certificates tell relying parties to look: CRL DP and AIA."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID

from scepd.ca.authority import ca_extensions
from scepd.keys.base import Signer
from tests.support.ca import issue, make_ca


async def test_no_urls_no_locator_extensions(ec_ca_key: Signer) -> None:
    ca = await make_ca(ec_ca_key)
    cert = await issue(ca, "plain")
    oids = {e.oid for e in cert.extensions}
    assert x509.CRLDistributionPoints.oid not in oids
    assert x509.AuthorityInformationAccess.oid not in oids


async def test_configured_urls_are_in_issued_certificates(ec_ca_key: Signer) -> None:
    ca = await make_ca(
        ec_ca_key,
        crl_url="http://pki.example/crl/ca.crl",
        ocsp_url="http://ocsp.example/",
        issuer_url="http://pki.example/ca.cer",
    )
    cert = await issue(ca, "located")
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not cdp.critical
    assert [p.full_name for p in cdp.value] == [[x509.UniformResourceIdentifier("http://pki.example/crl/ca.crl")]]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in aia] == [
        (AuthorityInformationAccessOID.OCSP, "http://ocsp.example/"),
        (AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.example/ca.cer"),
    ]


async def test_only_ocsp_url(ec_ca_key: Signer) -> None:
    ca = await make_ca(ec_ca_key, ocsp_url="http://ocsp.example/")
    cert = await issue(ca, "ocsp-only")
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [a.access_method for a in aia] == [AuthorityInformationAccessOID.OCSP]
    assert x509.CRLDistributionPoints.oid not in {e.oid for e in cert.extensions}


def test_ca_key_usage_depends_on_who_opens_envelopes() -> None:
    """With an RA the CA certificate invites no encryption; the lone-CA layout still needs keyEncipherment."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()

    def usage(**kw: bool) -> x509.KeyUsage:
        exts = {e.oid: e for e in ca_extensions(public, **kw)}
        assert exts[x509.KeyUsage.oid].critical
        return exts[x509.KeyUsage.oid].value  # type: ignore[return-value]

    with_ra = usage()
    assert with_ra.key_cert_sign and with_ra.crl_sign and with_ra.digital_signature
    assert not with_ra.key_encipherment and not with_ra.data_encipherment and not with_ra.key_agreement
    lone = usage(opens_envelopes=True)
    assert lone.key_cert_sign and lone.crl_sign and lone.digital_signature and lone.key_encipherment
