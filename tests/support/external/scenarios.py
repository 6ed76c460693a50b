"""Server-agnostic checks with external SCEP clients.

Each function takes a `ScepTarget` and a scratch directory and asserts; the
reference tests call them against micromdm's scepserver, a scepd test module
can call them unchanged against scepd.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests.support.external import certmonger, openssl_cli, scepclient
from tests.support.external.target import ScepTarget


def unique_cn(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _same_public_key(cert_pem: Path, key_pem: Path) -> bool:
    a = openssl_cli.run(["x509", "-noout", "-pubkey", "-in", str(cert_pem)]).stdout
    b = openssl_cli.run(["pkey", "-pubout", "-in", str(key_pem)]).stdout
    return a == b


def require_certmonger_can_decrypt(target: ScepTarget) -> None:
    if target.legacy_des_replies and not certmonger.legacy_namespace_available():
        pytest.skip(
            "server replies with DES; certmonger needs OpenSSL's legacy provider, "
            "which needs a private mount namespace (unshare -m) that is not permitted here"
        )


def certmonger_enrolls(
    target: ScepTarget, workdir: Path, *, pin_ca: bool = True, timeout: float = 60.0
) -> certmonger.EnrollResult:
    """certmonger daemon generates key+CSR with the challenge and gets a cert that
    `openssl verify` accepts against the target CA."""
    require_certmonger_can_decrypt(target)
    cn = unique_cn("certmonger")
    with certmonger.CertmongerInstance(workdir, openssl_legacy=target.legacy_des_replies) as cm:
        cas = cm.add_scep_ca("target", target.url, signing_ca=target.ca_pem_path if pin_ca else None)
        assert "certificate thumbprint" in cas, cas
        res = cm.request("target", subject=f"CN={cn}", challenge=target.challenge, timeout=timeout)
        assert res.status == "MONITORING", f"{res.listing}\n--- certmonger log ---\n{cm.log_tail(80)}"
    assert res.cert_path is not None
    assert openssl_cli.verify(res.cert_path, target.ca_pem_path), res.cert_path.read_text()
    assert f"CN = {cn}" in openssl_cli.x509_field(res.cert_path, "subject")
    assert _same_public_key(res.cert_path, res.key_path)
    return res


def certmonger_rejected_with_wrong_challenge(
    target: ScepTarget, workdir: Path, *, pin_ca: bool = True, timeout: float = 60.0
) -> certmonger.EnrollResult:
    # A FAILURE CertRep has no envelope: no legacy provider needed.
    with certmonger.CertmongerInstance(workdir) as cm:
        cm.add_scep_ca("target", target.url, signing_ca=target.ca_pem_path if pin_ca else None)
        res = cm.request(
            "target", subject=f"CN={unique_cn('certmonger-bad')}", challenge="not-" + target.challenge, timeout=timeout
        )
        log = cm.log_tail(80)
    assert res.status == "CA_REJECTED", f"{res.listing}\n--- certmonger log ---\n{log}"
    assert res.cert_path is None
    return res


def scepclient_enrolls(
    target: ScepTarget, workdir: Path, *, pinned_pem: Path | None = None
) -> scepclient.ScepclientResult:
    """pinned_pem: the certificate scepclient selects by fingerprint (default the CA).
    It envelopes to that certificate and accepts only replies it signed, so in front
    of an RA it is the RA that gets pinned, as admins pin an NDES RA."""
    cn = unique_cn("scepclient")
    pinned_der = openssl_cli.x509_to_der(pinned_pem or target.ca_pem_path)
    res = scepclient.enroll(
        workdir, target.url, target.challenge, cn=cn, ca_fingerprint=scepclient.ca_fingerprint(pinned_der)
    )
    assert res.issued, res.output
    assert res.cert_path is not None
    assert openssl_cli.verify(res.cert_path, target.ca_pem_path), res.output
    assert f"CN = {cn}" in openssl_cli.x509_field(res.cert_path, "subject")
    assert _same_public_key(res.cert_path, res.key_path)
    return res


def scepclient_rejected_with_wrong_challenge(target: ScepTarget, workdir: Path) -> scepclient.ScepclientResult:
    res = scepclient.enroll(workdir, target.url, "not-" + target.challenge, cn=unique_cn("scepclient-bad"))
    assert not res.issued, res.output
    assert res.returncode != 0
    return res


def scep_submit_reads_ca(target: ScepTarget) -> tuple[list[str], list[bytes]]:
    """GetCACaps and GetCACert through certmonger's scep-submit helper."""
    caps = certmonger.get_ca_caps(target.url)
    assert caps, "empty GetCACaps"
    certs = certmonger.get_ca_certs(target.url)
    ca_der = openssl_cli.x509_to_der(target.ca_pem_path)
    assert any(openssl_cli.x509_to_der(c) == ca_der for c in certs), certs
    return caps, certs


def get_ca_cert_matches(target: ScepTarget) -> bytes:
    """Raw GetCACert over HTTP: either one DER certificate (x-x509-ca-cert) or
    a degenerate certs-only PKCS#7 (x-x509-ca-ra-cert) containing the CA."""
    r = httpx.get(target.url, params={"operation": "GetCACert", "message": "0"}, timeout=30)
    assert r.status_code == 200, r.text
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    ca_der = openssl_cli.x509_to_der(target.ca_pem_path)
    if ctype == "application/x-x509-ca-cert":
        assert r.content == ca_der
    else:
        assert ctype == "application/x-x509-ca-ra-cert", ctype
        certs = [openssl_cli.x509_to_der(c) for c in openssl_cli.pkcs7_certs(r.content)]
        assert ca_der in certs
    return r.content
