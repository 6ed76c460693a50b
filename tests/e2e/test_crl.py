"""CRLs end to end: served over HTTP and by GetCRL, revocation by the CLI beside the
running daemon, openssl's verdict, and CRL numbers across a restart."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd.scep.client import issuer_and_serial
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.scep_client import Client, make_csr, rsa_key

CRL_URL = "http://pki.example/crl/ca.crl"


def fetch_crl(daemon: Daemon) -> x509.CertificateRevocationList:
    r = httpx.get(daemon.base_url + "/crl/ca.crl", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(r.content)
    ca = x509.load_pem_x509_certificate(daemon.ca_pem.read_bytes())
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def write_pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    return path


def openssl_verify(ca: Path, crl: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(ca), "-CRLfile", str(crl), str(cert)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("with_ra", [False, True])
async def test_get_crl_answers_the_current_crl(legacy_client: Client, client: Client, with_ra: bool) -> None:
    c = client if with_ra else legacy_client
    ca = c.ca_certs[-1]
    key = rsa_key()
    body = c.message(
        make_csr(key, "crl-reader", None),
        key,
        message_type=MessageType.GET_CRL,
        payload=issuer_and_serial(ca.subject, 12345),
    )
    rep = await c.send(body, key)
    assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
    assert rep.certificates == [] and len(rep.crls) == 1
    crl = x509.load_der_x509_crl(rep.crls[0])
    assert crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl_number(crl) >= 1


async def test_get_crl_for_another_issuer_is_bad_cert_id(client: Client) -> None:
    key = rsa_key()
    stranger = x509.Name.from_rfc4514_string("CN=Some Other CA")
    body = client.message(
        make_csr(key, "crl-reader", None), key, message_type=MessageType.GET_CRL, payload=issuer_and_serial(stranger, 1)
    )
    rep = await client.send(body, key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_CERT_ID


def test_crl_is_served_over_http(daemon: Daemon) -> None:
    crl = fetch_crl(daemon)
    assert crl_number(crl) >= 1
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=24)


@pytest.fixture(scope="module")
def crl_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A daemon state whose CRL follows the store every 0.2 s and whose certificates point at a CRL."""
    state = tmp_path_factory.mktemp("scepd-crl")
    init_state(state, CHALLENGE)
    config = state / "scepd.toml"
    text = config.read_text()
    text = text.replace('certificate = "ca.pem"', f'certificate = "ca.pem"\ncrl_url = "{CRL_URL}"')
    text = text.replace('file = "ca.crl"', 'file = "ca.crl"\ncheck_interval_seconds = 0.2')
    config.write_text(text)
    return state


@pytest.fixture
def crl_daemon(crl_state: Path) -> Iterator[Daemon]:
    with running(crl_state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


async def test_cli_revocation_reaches_the_served_crl(crl_daemon: Daemon, tmp_path: Path) -> None:
    d = crl_daemon
    config = str(d.config)
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(d.url, http)
        await client.get_ca_cert()
        certs = []
        for cn in ("to-revoke", "stays-valid"):
            rep, _ = await client.enroll(cn, CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
            certs.append(rep.certificates[0])
    revoked, valid = certs
    cdp = revoked.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier(CRL_URL)]

    before = fetch_crl(d)
    assert len(before) == 0
    serial = f"{revoked.serial_number:x}"
    out = scepd("cert", "revoke", serial, "--reason", "keyCompromise", "-c", config)
    assert f"revoked {serial}" in out.stdout

    with trio.fail_after(10):  # the daemon notices within check_interval_seconds
        while len(crl := fetch_crl(d)) == 0:
            await trio.sleep(0.1)
    assert crl_number(crl) > crl_number(before)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise

    ca_pem, crl_pem = d.ca_pem, write_pem(tmp_path / "crl.pem", crl)
    bad = openssl_verify(ca_pem, crl_pem, write_pem(tmp_path / "revoked.pem", revoked))
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    good = openssl_verify(ca_pem, crl_pem, write_pem(tmp_path / "valid.pem", valid))
    assert good.returncode == 0 and ": OK" in good.stdout, good.stdout + good.stderr

    # The same revocation again, an unknown serial and a made-up reason are refused.
    assert scepd("cert", "revoke", serial, "--reason", "superseded", "-c", config, check=False).returncode == 1
    assert scepd("cert", "revoke", "abcdef", "--reason", "superseded", "-c", config, check=False).returncode == 1
    assert scepd("cert", "revoke", serial, "--reason", "certificateHold", "-c", config, check=False).returncode == 2

    listing = scepd("cert", "list", "--status", "revoked", "-c", config).stdout
    assert serial in listing and f"{valid.serial_number:x}" not in listing
    found = scepd("cert", "search", "to-revoke", "-c", config).stdout
    assert serial in found and "revoked" in found and f"{valid.serial_number:x}" not in found
    assert serial in scepd("cert", "search", serial[:8], "-c", config).stdout
    shown = scepd("cert", "show", serial.upper(), "-c", config).stdout
    assert "reason:         keyCompromise" in shown and "CN=to-revoke" in shown
    assert x509.load_pem_x509_certificate(shown[shown.index("-----BEGIN") :].encode()) == revoked
    scepd("cert", "export", serial, "--der", "--out", str(tmp_path / "c.der"), "-c", config)
    assert (tmp_path / "c.der").read_bytes() == revoked.public_bytes(serialization.Encoding.DER)

    # The on-disk copy is what the daemon serves.
    shown = scepd("crl", "show", "-c", config).stdout
    assert "signature:      valid" in shown and f"  {serial} " in shown and "keyCompromise" in shown

    # A fresh CRL signed by the CLI on the token, beside the daemon, takes the next number.
    scepd("crl", "export", "--out", str(tmp_path / "fresh.pem"), "-c", config)
    fresh = x509.load_pem_x509_crl((tmp_path / "fresh.pem").read_bytes())
    assert crl_number(fresh) > crl_number(crl) and len(fresh) == 1
    check = subprocess.run(
        ["openssl", "crl", "-in", str(tmp_path / "fresh.pem"), "-CAfile", str(ca_pem), "-noout"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "verify OK" in check.stdout + check.stderr, check.stdout + check.stderr


def test_after_a_crash_the_restarted_daemon_signs_at_once(crl_state: Path) -> None:
    """SQLite is one node: its primary runs the CRL loop without a leader lease. With a lease, the daemon
    restarted after kill -9 would be a new holder waiting out its predecessor's (30 s) before signing."""
    with running(crl_state, CHALLENGE) as d:
        first = fetch_crl(d)
        d.proc.kill()
        d.proc.wait(10)
    with running(crl_state, CHALLENGE) as d:
        deadline = time.monotonic() + 10
        while crl_number(second := fetch_crl(d)) <= crl_number(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert crl_number(second) > crl_number(first), d.log()
        assert "scepd_leader 1.0" in httpx.get(d.metrics_url, timeout=10).text
        assert "event=crl_published" in d.log()


def test_crl_number_increases_across_a_restart(crl_state: Path) -> None:
    with running(crl_state, CHALLENGE) as d:
        first = fetch_crl(d)
    with running(crl_state, CHALLENGE) as d:
        # A restarted daemon serves the stored CRL at once and signs a fresh one beside it: it
        # never goes back to a lower number, and the fresh one takes a higher number.
        deadline = time.monotonic() + 20
        while crl_number(second := fetch_crl(d)) <= crl_number(first) and time.monotonic() < deadline:
            assert crl_number(second) == crl_number(first)
            time.sleep(0.05)
    assert crl_number(second) > crl_number(first)
    assert [e.serial_number for e in second] == [e.serial_number for e in first]
    assert second.last_update_utc >= first.last_update_utc
