"""`intune.ca_bundle`: the fake Intune behind TLS whose certificate comes from a private test CA,
as a TLS-inspecting corporate proxy presents one. Trusted only through the setting; without it
every call fails cleanly: a one-line reason naming the certificate, /readyz not ready, FAILURE
for the device, no traceback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scepd.intune.auth import ClientSecret
from scepd.intune.client import IntuneClient
from scepd.intune.errors import IntuneTransportError
from scepd.intune.http import http_client
from scepd.scep.constants import PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.intune.conftest import settings_for
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.fake_intune.helpers import make_csr as fake_csr
from tests.support.fake_intune.server import running_fake_intune
from tests.support.fake_intune.state import FakeIntune
from tests.support.scep_client import connected, make_csr, rsa_key

INTUNE_PATH = "/intune"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def inspection_ca(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A root (written to root.pem) and a server certificate for 127.0.0.1 it issued, as the
    server side's TLS context."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("scepd test inspection root"))
        .issuer_name(_name("scepd test inspection root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "root.pem"
    bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    chain, key_file = directory / "server.pem", directory / "server.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain, key_file)
    return bundle, server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    return inspection_ca(tmp_path_factory.mktemp("inspection-ca"))


@pytest.fixture(scope="module")
def fake(tls: tuple[Path, ssl.SSLContext]) -> Iterator[FakeIntune]:
    with running_fake_intune(ssl_context=tls[1]) as f:
        assert f.authority.startswith("https://")
        yield f


async def test_client_trusts_the_fake_only_through_the_ca_bundle(
    fake: FakeIntune, tls: tuple[Path, ssl.SSLContext]
) -> None:
    bundle, _ = tls
    before = len(fake.calls())
    async with http_client() as http:  # the system's (certifi's) roots: the test root is not among them
        client = IntuneClient(settings_for(fake), ClientSecret(fake.client_secret or ""), http)
        with pytest.raises(IntuneTransportError) as refused:
            await client.validate("tid-untrusted", fake_csr("CN=device", "x"))
    assert "TLS certificate not trusted" in str(refused.value) and "intune.ca_bundle" in str(refused.value)
    assert len(fake.calls()) == before  # nothing got through the handshake

    async with http_client(ca_bundle=bundle) as http:
        client = IntuneClient(settings_for(fake), ClientSecret(fake.client_secret or ""), http)
        challenge = fake.mint_challenge("CN=device-tls", ttl=600)
        assert (await client.validate("tid-trusted", fake_csr("CN=device-tls", challenge))).success
    routes = [c.route for c in fake.calls()[before:]]
    assert {"token", "discovery", "validate"} <= set(routes)


def intune_state(base: Path, fake: FakeIntune, bundle: Path | None) -> Path:
    state = base / ("with-bundle" if bundle else "without-bundle")
    state.mkdir()
    secret = state / "intune-client-secret"
    secret.write_text(fake.client_secret or "")
    toml = fake.config_snippet(f"file:{secret}") + "timeout_seconds = 3\nretries = 0\n"
    if bundle is not None:
        toml += f'ca_bundle = "{bundle}"\n'
    toml += f'\n[endpoints.intune]\npath = "{INTUNE_PATH}"\nchallenge = "intune"\n'
    init_state(state, CHALLENGE, extra_toml=toml)
    return state


def readyz(daemon: Daemon, status: int, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{daemon.metrics_base}/readyz", timeout=15)
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.3)


async def enroll_status(url: str, fake: FakeIntune, cn: str) -> PkiStatus:
    async with connected(url, timeout=60) as c:
        key = rsa_key()
        challenge = fake.mint_challenge(f"CN={cn}", ttl=600)
        rep = await c.send(c.message(make_csr(key, cn, challenge), key), key)
        return rep.status


def test_daemon_without_the_bundle_is_not_ready_and_says_why(
    fake: FakeIntune, tls: tuple[Path, ssl.SSLContext], tmp_path: Path
) -> None:
    state = intune_state(tmp_path, fake, None)
    with running(state, CHALLENGE, path=INTUNE_PATH) as d:
        body = readyz(d, 503)
        intune = body["checks"]["intune"]
        assert intune["ok"] is False and "TLS certificate not trusted" in intune["reason"], body
        assert trio.run(enroll_status, d.url, fake, "device-untrusted") is PkiStatus.FAILURE
        assert d.alive()
        log = d.log()
    assert "Traceback" not in log, log
    assert "TLS certificate not trusted" in log  # the enrollment's warning names the cause too
    out = scepd("intune", "check", "--config", str(state / "scepd.toml"), check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and "TLS certificate not trusted" in failed[0], out.stdout


def test_daemon_with_the_bundle_is_ready_and_enrolls(
    fake: FakeIntune, tls: tuple[Path, ssl.SSLContext], tmp_path: Path
) -> None:
    state = intune_state(tmp_path, fake, tls[0])
    with running(state, CHALLENGE, path=INTUNE_PATH) as d:
        body = readyz(d, 200)
        assert body["checks"]["intune"]["ok"] is True
        assert trio.run(enroll_status, d.url, fake, "device-trusted") is PkiStatus.SUCCESS
        log = d.log()
    assert "Traceback" not in log, log
