"""Profiles over HTTP: names accepted, imposed and trimmed; keys and hashes; the Intune SID URI."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scepd.enroll.profiles import OID_UPN
from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.conftest import CHALLENGE, SID_PREFIX, lifecycle_client
from tests.support.daemon import Daemon
from tests.support.scep_client import rsa_key

SID_URI = SID_PREFIX + "S-1-5-21-2127521184-1604012920-1887927527-72713"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as h:
        yield h


def csr_with(
    cn: str, sans: list[x509.GeneralName], *, ou: str | None = None, hash: hashes.HashAlgorithm | None = None
) -> tuple[x509.CertificateSigningRequest, object]:
    key = rsa_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    return builder.sign(key, hash or hashes.SHA256()), key


def stored_count(daemon: Daemon, cn: str) -> int:
    with daemon.db() as db:
        return int(db.execute("SELECT count(*) FROM certificates WHERE subject LIKE ?", (f"%CN={cn}%",)).fetchone()[0])


async def test_strict_profile_imposes_suffix_usages_and_copies_the_sid_uri(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/strict", http)
    csr, key = csr_with(
        "intune-device-1", [x509.DNSName("device-1.example.com"), x509.UniformResourceIdentifier(SID_URI)]
    )
    rep = await client.send(client.message(csr, key), key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    [cert] = rep.certificates
    cert.verify_directly_issued_by(client.ca_certs[-1])
    assert cert.subject.rfc4514_string() == "CN=intune-device-1,O=scepd e2e,C=DE"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SID_URI]
    assert san.get_values_for_type(x509.DNSName) == ["device-1.example.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=30, minutes=5)
    # openssl agrees: the chain verifies and the SID URI is in the certificate as issued
    pem = tmp_path / "device.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(daemon_lifecycle.ca_pem), str(pem)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"URI:{SID_URI}" in text


@pytest.mark.parametrize(
    ("sans", "ou", "words"),
    [
        ([x509.RFC822Name("someone@example.com")], None, "subjectAltName email:someone@example.com"),
        ([x509.UniformResourceIdentifier("https://evil.example/")], None, "subjectAltName uri:https://evil.example/"),
        ([x509.DNSName("ok.example.com")], "admins", "subject attribute OU"),
    ],
)
async def test_strict_profile_refuses_names_it_does_not_allow(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient, sans: list[x509.GeneralName], ou: str | None, words: str
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/strict", http)
    cn = f"refused-{len(words)}-{ou}"
    csr, key = csr_with(cn, sans, ou=ou)
    rep = await client.send(client.message(csr, key), key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text is not None and words in rep.fail_info_text and "'strict'" in rep.fail_info_text
    assert stored_count(daemon_lifecycle, cn) == 0


async def test_strict_profile_refuses_a_sha224_csr_as_bad_alg(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/strict", http)
    csr, key = csr_with("sha224-csr", [x509.DNSName("sha224.example.com")], hash=hashes.SHA224())
    rep = await client.send(client.message(csr, key), key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_ALG
    assert rep.fail_info_text is not None and "CSR signature hash sha224" in rep.fail_info_text


async def test_trim_profile_issues_without_the_disallowed_names(
    daemon_lifecycle: Daemon, http: httpx.AsyncClient
) -> None:
    client = await lifecycle_client(daemon_lifecycle, "/trim", http)
    upn = x509.OtherName(OID_UPN, b"\x0c\x0eu1@example.com")
    csr, key = csr_with(
        "user-1", [x509.DNSName("not-for-users.example.com"), upn, x509.UniformResourceIdentifier(SID_URI)], ou="sales"
    )
    rep = await client.send(client.message(csr, key), key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    [cert] = rep.certificates
    assert cert.subject.rfc4514_string() == "CN=user-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [upn, x509.UniformResourceIdentifier(SID_URI)]
