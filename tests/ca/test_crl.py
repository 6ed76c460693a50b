"""CRLs signed with a CA key on the SoftHSM2 token: their encoding, checked by cryptography and by the
openssl command line."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd.ca.crl import REVOCATION_REASONS, CrlTemplate, parse_reason, sign_crl
from scepd.keys.base import HashName, Signer
from scepd.keys.pkcs11.pool import TokenPool
from scepd.store.base import RevokedEntry
from tests.support.ca import NOW, issue, make_ca

DAY = dt.timedelta(days=1)


@pytest.fixture
def rsa_key(rsa_ca_key: Signer) -> Signer:
    return rsa_ca_key


async def test_fields_extensions_and_signature(rsa_key: Signer) -> None:
    ca = await make_ca(rsa_key)
    entries = [
        RevokedEntry(0x1234, NOW - dt.timedelta(hours=2), "keyCompromise"),
        RevokedEntry((1 << 159) + 7, NOW - dt.timedelta(hours=1), "cessationOfOperation"),
    ]
    crl = await ca.sign_crl(ca.crl_template(entries, 42, NOW, DAY))
    parsed = x509.load_der_x509_crl(crl.der)
    assert parsed.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert parsed.issuer == ca.certificate.subject
    assert parsed.last_update_utc == NOW and parsed.next_update_utc == NOW + DAY
    assert parsed.signature_hash_algorithm is not None and parsed.signature_hash_algorithm.name == "sha256"
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.key_id
    assert [(e.serial_number, e.revocation_date_utc) for e in parsed] == [(e.serial, e.revoked_at) for e in entries]
    reasons = [e.extensions.get_extension_for_class(x509.CRLReason).value.reason for e in parsed]
    assert reasons == [x509.ReasonFlags.key_compromise, x509.ReasonFlags.cessation_of_operation]
    assert (crl.number, crl.revoked, crl.this_update, crl.next_update) == (42, 2, NOW, NOW + DAY)
    assert x509.load_pem_x509_crl(crl.pem) == parsed


async def test_crl_authority_key_id_matches_issued_certificates(rsa_key: Signer) -> None:
    ca = await make_ca(rsa_key)
    cert = await issue(ca, "device")
    crl = x509.load_der_x509_crl((await ca.sign_crl(ca.crl_template([], 1, NOW, DAY))).der)
    cert_aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    crl_aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert crl_aki == cert_aki
    assert crl.issuer == cert.issuer


async def test_empty_crl_omits_the_revoked_list(rsa_key: Signer) -> None:
    from asn1crypto import crl as a_crl

    ca = await make_ca(rsa_key)
    crl = await ca.sign_crl(ca.crl_template([], 1, NOW, DAY))
    tbs = a_crl.CertificateList.load(crl.der)["tbs_cert_list"]
    assert tbs["version"].native == "v2"
    assert tbs["revoked_certificates"].native is None  # absent (RFC 5280 5.1.2.6), not an empty SEQUENCE
    assert len(x509.load_der_x509_crl(crl.der)) == 0


@pytest.mark.parametrize("reason", [None, "unspecified", "certificateHold", "wiped by admin"])
async def test_reason_code_only_for_meaningful_rfc5280_names(rsa_key: Signer, reason: str | None) -> None:
    ca = await make_ca(rsa_key)
    crl = await ca.sign_crl(ca.crl_template([RevokedEntry(5, NOW, reason)], 1, NOW, DAY))
    (entry,) = x509.load_der_x509_crl(crl.der)
    assert len(entry.extensions) == 0


def test_reason_names() -> None:
    assert set(REVOCATION_REASONS) == {
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "privilegeWithdrawn",
        "aACompromise",
    }
    assert parse_reason("keyCompromise") == "keyCompromise"
    assert parse_reason("key_compromise") == "keyCompromise"
    for bad in ("certificateHold", "removeFromCRL", "KeyCompromise", ""):
        with pytest.raises(ValueError, match="unknown revocation reason"):
            parse_reason(bad)


async def test_times_after_2049_are_generalized_time(rsa_key: Signer) -> None:
    from asn1crypto import crl as a_crl

    ca = await make_ca(rsa_key)
    later = dt.datetime(2049, 12, 31, 12, tzinfo=dt.UTC)
    crl = await ca.sign_crl(ca.crl_template([RevokedEntry(9, later, None)], 1, later, DAY))
    tbs = a_crl.CertificateList.load(crl.der)["tbs_cert_list"]
    assert tbs["this_update"].name == "utc_time"
    assert tbs["next_update"].name == "general_time"
    assert x509.load_der_x509_crl(crl.der).next_update_utc == later + DAY


def test_template_rejects_nonsense() -> None:
    name = x509.Name([])
    with pytest.raises(ValueError, match="CRL number"):
        CrlTemplate(name, b"k", -1, NOW, NOW + DAY, [])
    with pytest.raises(ValueError, match="CRL number"):
        CrlTemplate(name, b"k", 1 << 160, NOW, NOW + DAY, [])
    with pytest.raises(ValueError, match="nextUpdate"):
        CrlTemplate(name, b"k", 1, NOW, NOW, [])


async def test_ec_ca_signs_with_ecdsa(ec_ca_key: Signer) -> None:
    ca = await make_ca(ec_ca_key)
    crl = await sign_crl(ca.crl_template([RevokedEntry(3, NOW, "superseded")], 7, NOW, DAY), ca.signer, HashName.SHA384)
    parsed = x509.load_der_x509_crl(crl.der)
    assert parsed.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA384
    assert parsed.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]


def _pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_token_signed_crl_verifies_with_openssl(
    token_pool: TokenPool, ca_key_labels: dict[str, str], tmp_path: Path, kind: str
) -> None:
    """The CA key is on SoftHSM2; openssl checks the CRL and uses it to reject a revoked certificate."""
    ca = await make_ca(token_pool.key(ca_key_labels[kind]), f"CRL token CA {kind}")
    revoked, valid = await issue(ca, "revoked-device"), await issue(ca, "valid-device")
    now = dt.datetime.now(dt.UTC)
    entry = RevokedEntry(revoked.serial_number, now - dt.timedelta(minutes=1), "keyCompromise")
    crl = x509.load_der_x509_crl((await ca.sign_crl(ca.crl_template([entry], 3, now, DAY))).der)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]

    ca_pem, crl_pem = _pem(tmp_path / "ca.pem", ca.certificate), _pem(tmp_path / "crl.pem", crl)
    out = _openssl("crl", "-in", crl_pem, "-CAfile", ca_pem, "-noout")
    assert out.returncode == 0 and "verify OK" in out.stderr + out.stdout, out.stderr
    text = _openssl("crl", "-in", crl_pem, "-noout", "-text").stdout
    assert "Key Compromise" in text and "X509v3 CRL Number" in text

    check = ("verify", "-crl_check", "-CAfile", ca_pem, "-CRLfile", crl_pem)
    out = _openssl(*check, _pem(tmp_path / "valid.pem", valid))
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr
    out = _openssl(*check, _pem(tmp_path / "revoked.pem", revoked))
    assert out.returncode != 0 and "certificate revoked" in out.stdout + out.stderr, out.stdout + out.stderr
