"""CA certificate lifecycle: GetNextCACert with a configured rollover certificate, and the expiry warning."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon, init_state, running


def rollover_certificate(path: Path) -> x509.Certificate:
    """A next-generation CA certificate. Its key would live on the token too; GetNextCACert only serves the certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "scepd test CA 2"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scepd tests"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=7300))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


@pytest.fixture(scope="module")
def rollover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, x509.Certificate]]:
    state = tmp_path_factory.mktemp("scepd-rollover")
    init_state(state, CHALLENGE)
    nxt = rollover_certificate(state / "next.pem")
    config = state / "scepd.toml"
    # A ten-year CA with a warning window longer than that: the warning is due at once.
    config.write_text(
        config.read_text().replace(
            'certificate = "ca.pem"',
            'certificate = "ca.pem"\nnext_certificate = "next.pem"\nexpiry_warning_days = 3651',
        )
    )
    with running(state, CHALLENGE) as d:
        yield d, nxt
    assert "Traceback" not in d.log(), d.log()


def test_get_next_ca_cert_is_signed_by_the_current_ca(
    rollover: tuple[Daemon, x509.Certificate], tmp_path: Path
) -> None:
    daemon, nxt = rollover
    caps = httpx.get(daemon.url, params={"operation": "GetCACaps"}, timeout=10).text.split()
    assert "GetNextCACert" in caps
    r = httpx.get(daemon.url, params={"operation": "GetNextCACert"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-x509-next-ca-cert"
    reply = tmp_path / "next.p7"
    reply.write_bytes(r.content)
    # openssl checks the signature against today's CA, then the content is the certs-only message.
    content = tmp_path / "content.p7"
    done = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(reply),
            "-binary",
            "-CAfile",
            str(daemon.state / "ca.pem"),
            "-out",
            str(content),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(content), "-print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    served = x509.load_pem_x509_certificates(printed.encode())
    assert served == [nxt]


def test_a_tampered_next_ca_reply_does_not_verify(rollover: tuple[Daemon, x509.Certificate], tmp_path: Path) -> None:
    daemon, nxt = rollover
    body = bytearray(httpx.get(daemon.url, params={"operation": "GetNextCACert"}, timeout=10).content)
    at = bytes(body).find(nxt.public_bytes(serialization.Encoding.DER)[-40:])
    assert at > 0
    body[at] ^= 0x01
    reply = tmp_path / "tampered.p7"
    reply.write_bytes(bytes(body))
    done = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(reply),
            "-binary",
            "-CAfile",
            str(daemon.state / "ca.pem"),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
    )
    assert done.returncode != 0


def test_ca_expiry_is_warned_at_start(rollover: tuple[Daemon, x509.Certificate]) -> None:
    daemon, _ = rollover
    lines = [line for line in daemon.log().splitlines() if "event=ca_certificate_expiring" in line]
    assert lines, daemon.log()
    assert "rollover_configured=True" in lines[0]
    days_left = int(re.search(r"days_left=(\d+)", lines[0]).group(1))  # type: ignore[union-attr]
    assert 9 * 365 < days_left < 3651


def test_without_a_rollover_certificate_get_next_ca_cert_is_404(daemon: Daemon) -> None:
    assert "GetNextCACert" not in httpx.get(daemon.url, params={"operation": "GetCACaps"}, timeout=10).text
    r = httpx.get(daemon.url, params={"operation": "GetNextCACert"}, timeout=10)
    assert r.status_code == 404 and "rollover" in r.text
    assert "event=ca_certificate_expiring" not in daemon.log()
