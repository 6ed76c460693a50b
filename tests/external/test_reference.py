"""Prove the external-client harness against micromdm's reference SCEP server."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.external import certmonger, openssl_cli, scenarios
from tests.support.external.target import ScepTarget


def test_scep_submit_get_ca_caps_and_cert(reference_scep_server: ScepTarget) -> None:
    caps, certs = scenarios.scep_submit_reads_ca(reference_scep_server)
    assert "POSTPKIOperation" in caps
    assert len(certs) == 1  # micromdm: CA only, no RA


def test_scep_submit_certmonger_style_operations(reference_scep_server: ScepTarget) -> None:
    url = reference_scep_server.url
    ident = certmonger.scep_submit(url, operation="IDENTIFY")
    assert ident.returncode == 0 and ident.stdout.startswith("SCEP (certmonger"), ident
    caps = certmonger.scep_submit(url, operation="FETCH-SCEP-CA-CAPS")
    assert caps.status == "ISSUED" and "SHA-256" in caps.stdout, caps
    certs = certmonger.scep_submit(url, operation="FETCH-SCEP-CA-CERTS")
    assert certs.status == "ISSUED" and "BEGIN CERTIFICATE" in certs.stdout, certs
    reqs = certmonger.scep_submit(url, operation="GET-NEW-REQUEST-REQUIREMENTS")
    assert "CERTMONGER_PKCSREQ" in reqs.stdout.split()


def test_get_ca_cert_raw(reference_scep_server: ScepTarget) -> None:
    scenarios.get_ca_cert_matches(reference_scep_server)


def test_certmonger_enrolls(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    scenarios.certmonger_enrolls(reference_scep_server, tmp_path / "cm")


def test_certmonger_unpinned_ca_only_server_fails_verification(
    reference_scep_server: ScepTarget, tmp_path: Path
) -> None:
    """Documents the certmonger 0.79.17 quirk: from a CA-only GetCACert it learns
    only an 'encryption cert', and then cannot build a trust store for the
    CertRep signature.  (scepd should serve CA+RA, or users must pass -N.)"""
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.add_scep_ca("ref", reference_scep_server.url)
        store = cm.ca_store("ref")
        assert store.get("ca_encryption_cert", "").startswith("-----BEGIN CERTIFICATE-----")
        assert not store.get("ca_encryption_issuer_cert")
        res = cm.request(
            "ref",
            subject=f"CN={scenarios.unique_cn('unpinned')}",
            challenge=reference_scep_server.challenge,
            timeout=60,
        )
    assert res.status == "CA_UNREACHABLE", res.listing
    assert "failed to verify signature on server response" in (res.ca_error or ""), res.listing


def test_certmonger_wrong_challenge_rejected(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    res = scenarios.certmonger_rejected_with_wrong_challenge(reference_scep_server, tmp_path / "cm")
    # micromdm answers FAILURE/badRequest
    assert "not permitted or is not supported" in (res.ca_error or ""), res.listing


def test_scepclient_enrolls(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    scenarios.scepclient_enrolls(reference_scep_server, tmp_path / "sc")


def test_scepclient_wrong_challenge_rejected(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    res = scenarios.scepclient_rejected_with_wrong_challenge(reference_scep_server, tmp_path / "sc")
    assert "badRequest" in res.output


def test_openssl_req_and_envelope_roundtrip(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    """openssl_cli helpers: CSR with challengePassword, EnvelopedData to the CA
    cert, decrypted again with the reference CA's key."""
    req = openssl_cli.req_new(tmp_path, "/CN=openssl-client/O=tests", challenge="pw 123")
    assert openssl_cli.req_verify(req.csr_path)
    text = openssl_cli.req_text(req.csr_path)
    assert "challengePassword" in text and "pw 123" in text
    env = openssl_cli.cms_encrypt(req.csr_der, reference_scep_server.ca_pem_path, cipher="aes256")
    assert "aes-256-cbc" in openssl_cli.cms_print(env)
    ca_key = reference_scep_server.ca_pem_path.parent / "ca.key"  # PEM, empty pass phrase
    assert openssl_cli.cms_decrypt(env, ca_key, key_password="") == req.csr_der
    oaep = openssl_cli.cms_encrypt(
        b"x" * 40,
        reference_scep_server.ca_pem_path,
        cipher="aes128",
        keyopts=["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
    )
    assert "rsaesOaep" in openssl_cli.cms_print(oaep)
    assert openssl_cli.cms_decrypt(oaep, ca_key, key_password="") == b"x" * 40


def test_openssl_verifies_reference_certrep(reference_scep_server: ScepTarget, tmp_path: Path) -> None:
    """openssl_cli.cms_verify_der on a real CertRep: replay certmonger's stored
    PKCSReq (wrong challenge, so a FAILURE reply) by POST and check the
    reply's signature chains to the CA."""
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.add_scep_ca("ref", reference_scep_server.url, signing_ca=reference_scep_server.ca_pem_path)
        res = cm.request("ref", subject=f"CN={scenarios.unique_cn('replay')}", challenge="wrong", timeout=60)
        assert res.status == "CA_REJECTED", res.listing
        stored = [certmonger._read_store_file(p) for p in cm.requests_dir.iterdir()]
    pkcsreq_pem = next(d["scep_req"] for d in stored if d.get("id") == res.request_id)
    der = openssl_cli.run(["pkcs7", "-inform", "PEM", "-outform", "DER"], input=pkcsreq_pem.encode()).stdout
    # certmonger's request: signed by its self-signed cert, AES-256 envelope
    inner = openssl_cli.cms_verify_der(der, noverify=True).content
    assert "aes-256-cbc" in openssl_cli.cms_print(inner)
    r = httpx.post(
        reference_scep_server.url,
        params={"operation": "PKIOperation"},
        content=der,
        headers={"content-type": "application/x-pki-message"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-pki-message"
    verified = openssl_cli.cms_verify_der(r.content, reference_scep_server.ca_pem_path)
    assert openssl_cli.x509_to_der(verified.signers_pem) == openssl_cli.x509_to_der(reference_scep_server.ca_pem_path)
    printed = openssl_cli.cms_print(r.content)
    assert "2.16.840.1.113733.1.9.4" in printed  # failInfo attribute present
