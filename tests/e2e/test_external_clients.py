"""scepd against SCEP clients and tools the project did not write.

The same server-agnostic scenarios that are proven against micromdm's
`scepserver` in tests/external run here against a real scepd: certmonger's
daemon with its `scep-submit` helper, micromdm's `scepclient`, and the
`openssl` command line reading scepd's replies. Every issued certificate is
checked with `openssl verify` against the CA.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import shlex
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd.keys.base import HashName, OaepParams, RsaPadding
from scepd.scep import ContentCipher
from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import MessageType
from tests.support.daemon import REPO, Daemon
from tests.support.external import certmonger, openssl_cli, scenarios, scepclient
from tests.support.external.target import ScepTarget


@pytest.fixture(scope="module")
def target(daemon: Daemon) -> ScepTarget:
    return ScepTarget(url=daemon.url, ca_pem_path=daemon.ca_pem, challenge=daemon.challenge)


@pytest.fixture(scope="module")
def target_ra(daemon_ra: Daemon) -> ScepTarget:
    return ScepTarget(url=daemon_ra.url, ca_pem_path=daemon_ra.ca_pem, challenge=daemon_ra.challenge)


@pytest.fixture(scope="module")
def target_lone(daemon_legacy: Daemon) -> ScepTarget:
    """An earlier version's lone CA (no RA)."""
    return ScepTarget(url=daemon_legacy.url, ca_pem_path=daemon_legacy.ca_pem, challenge=daemon_legacy.challenge)


def stored_serials(daemon: Daemon) -> set[str]:
    with daemon.db() as db:
        return {row[0].lower() for row in db.execute("SELECT serial FROM certificates")}


def serial_hex(cert_pem: Path) -> str:
    return format(x509.load_pem_x509_certificate(cert_pem.read_bytes()).serial_number, "x")


def test_scep_submit_reads_caps_and_ca(target: ScepTarget) -> None:
    caps, _ = scenarios.scep_submit_reads_ca(target)
    assert {"POSTPKIOperation", "SHA-256", "AES", "SCEPStandard", "Renewal"} <= set(caps)


def test_scep_submit_reads_ca_and_ra(target_ra: ScepTarget) -> None:
    _, certs = scenarios.scep_submit_reads_ca(target_ra)
    assert len(certs) == 2  # the RA, then the CA


@pytest.mark.parametrize("which", ["ca", "ra"])
def test_get_ca_cert_raw(which: str, request: pytest.FixtureRequest) -> None:
    scenarios.get_ca_cert_matches(request.getfixturevalue("target_lone" if which == "ca" else "target"))


def test_certmonger_enrolls_pinned_ca(daemon: Daemon, target: ScepTarget, tmp_path: Path) -> None:
    res = scenarios.certmonger_enrolls(target, tmp_path / "cm")
    assert res.cert_path is not None
    assert serial_hex(res.cert_path) in stored_serials(daemon)


def readme_certmonger_commands() -> list[list[str]]:
    """The certmonger lines of the README's client examples, as argument lists."""
    text = (REPO / "README.md").read_text()
    lines = text[text.index("# certmonger\n") :].splitlines()[1:]
    commands = [shlex.split(line) for line in itertools.takewhile(lambda line: line.startswith("getcert "), lines)]
    assert [c[1] for c in commands] == ["add-scep-ca", "request"], commands
    return commands


def test_certmonger_enrolls_with_the_readme_commands(daemon: Daemon, tmp_path: Path) -> None:
    """certmonger as shipped, against the default `scepd init` makes, with exactly the README's two
    commands: no -N, so it trusts only what the CA+RA GetCACert taught it (issue 13)."""
    add, req = readme_certmonger_commands()
    assert "-N" not in add and "-r" not in add and "-I" not in add  # unpinned
    cert_path, key_path = tmp_path / "me.crt", tmp_path / "me.key"
    swap = {
        "http://127.0.0.1:8080/scep": daemon.url,
        "<challenge>": daemon.challenge,
        "/tmp/me.crt": str(cert_path),
        "/tmp/me.key": str(key_path),
    }
    add, req = ([swap.get(a, a) for a in c] for c in (add, req))
    assert set(swap.values()) <= set(add + req), (add, req)
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.getcert(*add[1:])
        deadline = time.monotonic() + 20
        while "certificate thumbprint" not in cm.getcert("list-cas", "-c", add[add.index("-c") + 1]).stdout:
            assert time.monotonic() < deadline, cm.log_tail(60)
            time.sleep(0.3)
        out = cm.getcert(*req[1:]).stdout
        m = re.search(r'New signing request "([^"]+)" added', out)
        assert m, out
        res = cm.wait(m.group(1), key_path=key_path, cert_path=cert_path, timeout=60)
        assert res.status == "MONITORING", f"{res.listing}\n{cm.log_tail(60)}"
        store = cm.ca_store(add[add.index("-c") + 1])
    assert res.cert_path is not None
    assert openssl_cli.verify(res.cert_path, daemon.ca_pem)
    assert serial_hex(res.cert_path) in stored_serials(daemon)
    # certmonger encrypted to the RA and learned the CA above it from GetCACert.
    ra_der, ca_der = openssl_cli.x509_to_der(daemon.ra_pem), openssl_cli.x509_to_der(daemon.ca_pem)
    assert openssl_cli.x509_to_der(store["ca_encryption_cert"].encode()) == ra_der
    assert openssl_cli.x509_to_der(store["ca_encryption_issuer_cert"].encode()) == ca_der


def test_certmonger_wrong_challenge_rejected(daemon: Daemon, target: ScepTarget, tmp_path: Path) -> None:
    before = stored_serials(daemon)
    res = scenarios.certmonger_rejected_with_wrong_challenge(target, tmp_path / "cm")
    assert "not permitted" in res.listing or "badRequest" in res.listing or "CA_REJECTED" in res.listing
    assert stored_serials(daemon) == before


def test_certmonger_renews_without_challenge(daemon: Daemon, target: ScepTarget, tmp_path: Path) -> None:
    """certmonger renews by signing the new request with the certificate it holds."""
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.add_scep_ca("target", target.url, signing_ca=target.ca_pem_path)
        cn = scenarios.unique_cn("renew")
        first = cm.request("target", subject=f"CN={cn}", challenge=target.challenge, timeout=60)
        assert first.status == "MONITORING", first.listing
        assert first.cert_path is not None
        old_serial = serial_hex(first.cert_path)
        cm.getcert("resubmit", "-i", first.request_id)
        deadline = time.monotonic() + 60
        while True:  # resubmit answers at once; the new certificate replaces the file when issued
            renewed = cm.wait(first.request_id, key_path=first.key_path, cert_path=first.cert_path, timeout=60)
            if renewed.status != "MONITORING" or serial_hex(first.cert_path) != old_serial:
                break
            assert time.monotonic() < deadline, f"no renewal in 60 s\n{cm.log_tail(60)}"
            time.sleep(0.5)
        assert renewed.status == "MONITORING", f"{renewed.listing}\n{cm.log_tail(60)}"
    assert renewed.cert_path is not None
    new_serial = serial_hex(renewed.cert_path)
    assert new_serial != old_serial
    assert openssl_cli.verify(renewed.cert_path, target.ca_pem_path)
    assert {old_serial, new_serial} <= stored_serials(daemon)


@pytest.mark.parametrize("which", ["ca", "ra"])
def test_scepclient_enrolls_with_legacy_des(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """micromdm's scepclient 2.1 envelopes with single DES whatever GetCACaps says: these
    daemons allow it by config, and mirror it in the reply. In front of an RA the admin
    pins the RA's fingerprint, as with NDES; scepclient then envelopes to it and trusts
    replies it signed."""
    daemon: Daemon = request.getfixturevalue("daemon_legacy" if which == "ca" else "daemon_ra")
    target = ScepTarget(url=daemon.url, ca_pem_path=daemon.ca_pem, challenge=daemon.challenge)
    pinned = daemon.ca_pem if which == "ca" else daemon.state / "ra.pem"
    res = scenarios.scepclient_enrolls(target, tmp_path / "sc", pinned_pem=pinned)
    assert res.cert_path is not None
    assert serial_hex(res.cert_path) in stored_serials(daemon)


def test_scepclient_des_refused_by_default(daemon: Daemon, target: ScepTarget, tmp_path: Path) -> None:
    before = stored_serials(daemon)
    res = scepclient.enroll(
        tmp_path / "sc",
        target.url,
        target.challenge,
        cn=scenarios.unique_cn("des"),
        ca_fingerprint=scepclient.ca_fingerprint(openssl_cli.x509_to_der(daemon.ra_pem)),
    )
    assert not res.issued
    assert "badAlg" in res.output
    assert stored_serials(daemon) == before


def test_scepclient_wrong_challenge_rejected(daemon_legacy: Daemon, tmp_path: Path) -> None:
    target = ScepTarget(url=daemon_legacy.url, ca_pem_path=daemon_legacy.ca_pem, challenge=daemon_legacy.challenge)
    res = scenarios.scepclient_rejected_with_wrong_challenge(target, tmp_path / "sc")
    assert "badRequest" in res.output


@pytest.mark.parametrize("which", ["ca", "ra"])
@pytest.mark.parametrize(
    ("cipher", "padding"),
    [(ContentCipher.AES128_CBC, RsaPadding.PKCS1V15), (ContentCipher.DES3_CBC, RsaPadding.OAEP)],
    ids=["aes128-v15", "des3-oaep"],
)
def test_openssl_reads_reply_to_openssl_request(
    which: str, cipher: ContentCipher, padding: RsaPadding, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The CSR and key come from `openssl req`; the CertRep is verified, decrypted and its
    certificate extracted with `openssl cms` and `openssl pkcs7`, then checked with `openssl verify`.

    Only the SignedData wrapper is built by our codec: the openssl CLI cannot add SCEP's
    signed attributes (messageType, transactionID, senderNonce).
    """
    daemon: Daemon = request.getfixturevalue("daemon_legacy" if which == "ca" else "daemon")
    r = httpx.get(daemon.url, params={"operation": "GetCACert"}, timeout=30)
    if r.headers["content-type"].startswith("application/x-x509-ca-ra-cert"):
        chain = [x509.load_pem_x509_certificate(p) for p in openssl_cli.pkcs7_certs(r.content)]
    else:
        chain = [x509.load_der_x509_certificate(r.content)]
    recipient = chain[0]

    cn = scenarios.unique_cn("openssl")
    req = openssl_cli.req_new(tmp_path, f"/CN={cn}/O=openssl client", challenge=daemon.challenge)
    key = serialization.load_pem_private_key(req.key_path.read_bytes(), None)
    csr = x509.load_pem_x509_csr(req.csr_pem)
    body = build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=req.csr_der,
        transaction_id=secrets.token_hex(16),
        sender_nonce=os.urandom(16),
        recipient_certificate=recipient,
        cipher=cipher,
        padding=padding,
        oaep=OaepParams() if padding is RsaPadding.OAEP else None,
        signer_certificate=make_self_signed(key, csr.subject, _now()),
        signer_key=key,  # type: ignore[arg-type]
        digest=HashName.SHA256,
    )
    reply = httpx.get(
        daemon.url, params={"operation": "PKIOperation", "message": base64.b64encode(body).decode()}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/x-pki-message"

    verified = openssl_cli.cms_verify_der(reply.content, daemon.ca_pem)
    printed = openssl_cli.cms_print(reply.content)
    assert "contentType" in printed  # Windows and jscep refuse a CertRep without it
    envelope = verified.content
    degenerate = openssl_cli.cms_decrypt(envelope, req.key_path)
    certs = openssl_cli.pkcs7_certs(degenerate)
    assert len(certs) == 1
    cert_path = tmp_path / "issued.pem"
    cert_path.write_bytes(certs[0])
    assert openssl_cli.verify(cert_path, daemon.ca_pem)
    assert f"CN = {cn}" in openssl_cli.x509_field(cert_path, "subject")
    assert serial_hex(cert_path) in stored_serials(daemon)


def _now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.now(dt.UTC)
