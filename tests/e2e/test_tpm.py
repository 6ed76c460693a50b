"""scepd with its CA and RA keys in a TPM 2.0 (the session's software TPM, tests/support/tpm.py), over HTTP.

`scepd init --token tpm` makes the state on the TPM (a tpm2-pkcs11 store of
its own beside the key tests' one), `scepd serve` runs it, and the project's
SCEP client enrolls against it. Skipped only where swtpm is not installed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.scep import UNREADABLE_TEXT
from scepd.scep.client import parse_cert_rep
from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.test_oracle import request, shapes
from tests.support.daemon import Daemon, running, scepd
from tests.support.scep_client import Client, connected, make_csr, rsa_key
from tests.support.tpm import TCTI, TpmToken, requires_swtpm

pytestmark = requires_swtpm
CHALLENGE = "tpm-static-challenge-Zr4"


@pytest.fixture(scope="module")
def tpm_state(tpm_token: TpmToken, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("scepd-tpm")
    out = scepd(
        "init",
        "--state",
        str(state),
        "--token",
        "tpm",
        "--tcti",
        TCTI,
        "--listen",
        "127.0.0.1:0",
        "--challenge",
        CHALLENGE,
        "--subject",
        "CN=scepd TPM test CA,O=scepd tests",
    )
    assert "created CA" in out.stdout and "created RA" in out.stdout, out.stdout + out.stderr
    return state


@pytest.fixture(scope="module")
def tpm_daemon(tpm_state: Path) -> Iterator[Daemon]:
    config = tpm_state / "scepd.toml"
    # A short token timeout, for the frozen-TPM test (TPM operations take tens of milliseconds).
    config.write_text(config.read_text().replace("workers = 0\n", "workers = 0\ntimeout = 2\n", 1))
    with running(tpm_state, CHALLENGE) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


@pytest.fixture
async def tpm_client(tpm_daemon: Daemon) -> AsyncIterator[Client]:
    async with connected(tpm_daemon.url) as c:
        yield c


def test_init_wrote_a_tpm_config_and_no_pin_anywhere_but_the_secret_files(tpm_state: Path) -> None:
    text = (tpm_state / "scepd.toml").read_text()
    assert "libtpm2_pkcs11.so" in text and 'tpm2_pkcs11_store = "tpm2"' in text and "softhsm2_conf" not in text
    pin = (tpm_state / "secrets" / "token.pin").read_text().strip()
    assert len(pin) >= 20 and pin not in text
    assert (tpm_state / "secrets" / "token.pin").stat().st_mode & 0o077 == 0
    assert (tpm_state / "tpm2").stat().st_mode & 0o077 == 0
    check = scepd("config", "check", "--config", str(tpm_state / "scepd.toml"))
    assert ": ok" in check.stdout and "ca_not_usable" not in check.stdout, check.stdout + check.stderr


def test_keys_the_tpm_cannot_hold_are_refused_by_ca_init_and_config_check(tpm_state: Path, tmp_path: Path) -> None:
    """Refused from the command and the files alone, before the token is opened (so run in-process)."""
    from scepd.cli import main

    config = tpm_state / "scepd.toml"
    with pytest.raises(SystemExit, match="RSA-4096 is not available on a TPM"):
        main(["ca", "init", "--config", str(config), "--subject", "CN=x", "--key-size", "4096"])
    # A config whose CA certificate holds an RSA-4096 key cannot be a TPM CA: config check says so.
    big = rsa.generate_private_key(65537, 4096)
    name = x509.Name.from_rfc4514_string("CN=too big for a TPM")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(big.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(big, hashes.SHA256())
    )
    (tmp_path / "big.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    text = config.read_text().replace('certificate = "ca.pem"', f'certificate = "{tmp_path / "big.pem"}"')
    text = text.replace('pin = "file:secrets/token.pin"', f'pin = "file:{tpm_state / "secrets" / "token.pin"}"')
    text = text.replace('tpm2_pkcs11_store = "tpm2"', f'tpm2_pkcs11_store = "{tpm_state / "tpm2"}"')
    (tmp_path / "scepd.toml").write_text(text)
    with pytest.raises(SystemExit, match="ca.certificate .* RSA-4096 is not available on a TPM"):
        main(["config", "check", "--config", str(tmp_path / "scepd.toml")])


async def test_enroll_against_the_tpm(tpm_daemon: Daemon, tpm_client: Client) -> None:
    ra, ca = tpm_client.ca_certs
    assert ca == x509.load_pem_x509_certificate(tpm_daemon.ca_pem.read_bytes())
    ra.verify_directly_issued_by(ca)
    for n in range(3):
        rep, key = await tpm_client.enroll(f"tpm-device-{n}", CHALLENGE)
        assert rep.status == PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
        cert = rep.certificates[0]
        assert cert.public_key() == key.public_key()
        cert.verify_directly_issued_by(ca)
    r = httpx.get(f"{tpm_daemon.metrics_base}/readyz", timeout=15)
    assert r.status_code == 200, r.text
    # The TPM holds no secret keys, so the rejection secret is per session, and start-up says so.
    assert "envelope_key_without_reject_secret" in tpm_daemon.log() and "none on a TPM token" in tpm_daemon.log()


async def test_every_unreadable_envelope_gets_one_answer_from_the_tpm(tpm_client: Client) -> None:
    """test_oracle's shapes against the TPM: bad blocks leave tpm2-pkcs11's decrypt open, and still
    every unreadable envelope gets the same answer and the good one after them enrolls."""
    pub = tpm_client.recipient.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    key = rsa_key()
    csr_der = make_csr(key, "probe", CHALLENGE).public_bytes(Encoding.DER)
    answers: dict[str, set[tuple[object, ...]]] = {}
    for name, (payload, block, cek, rsa_padding) in shapes(pub, csr_der).items():
        if name == "good":
            continue
        for _attempt in range(2):
            r = await tpm_client.post(request(tpm_client, key, payload, block, cek, rsa_padding))
            assert r.status_code == 200, (name, r.status_code, r.text)
            rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=tpm_client.ca_certs)
            answers.setdefault(name, set()).add((r.status_code, rep.status, rep.fail_info, rep.fail_info_text))
    assert all(len(a) == 1 for a in answers.values()), answers
    assert set().union(*answers.values()) == {(200, PkiStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_TEXT)}
    payload, block, cek, rsa_padding = shapes(pub, csr_der)["good"]
    r = await tpm_client.post(request(tpm_client, key, payload, block, cek, rsa_padding))
    rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=tpm_client.ca_certs)
    assert rep.status == PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)


def test_certmonger_enrolls_against_the_tpm(tpm_daemon: Daemon, tmp_path: Path) -> None:
    from tests.support.external import scenarios
    from tests.support.external.target import ScepTarget

    target = ScepTarget(url=tpm_daemon.url, ca_pem_path=tpm_daemon.ca_pem, challenge=CHALLENGE)
    res = scenarios.certmonger_enrolls(target, tmp_path / "cm")  # checks the certificate with openssl verify
    assert res.cert_path is not None


@pytest.mark.parametrize(
    "cipher,padding", [("AES128_CBC", "PKCS1V15"), ("DES3_CBC", "OAEP")], ids=["aes128-v15", "des3-oaep-sha1"]
)
def test_openssl_reads_the_tpm_daemons_reply(tpm_daemon: Daemon, tmp_path: Path, cipher: str, padding: str) -> None:
    """test_external_clients' openssl check (openssl req, cms -verify, cms -decrypt, verify) against the TPM."""
    from scepd.keys.base import RsaPadding
    from scepd.scep import ContentCipher
    from tests.e2e.test_external_clients import test_openssl_reads_reply_to_openssl_request as openssl_check

    class Fixtures:
        @staticmethod
        def getfixturevalue(name: str) -> Daemon:
            return tpm_daemon

    openssl_check("ra", ContentCipher[cipher], RsaPadding[padding], Fixtures(), tmp_path)  # type: ignore[arg-type]


# Last in this file: they freeze and reset the session's TPM.


def _readyz(daemon: Daemon) -> int:
    return httpx.get(f"{daemon.metrics_base}/readyz", timeout=15).status_code


def _wait_ready(daemon: Daemon, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _readyz(daemon) != 200:
        assert time.monotonic() < deadline, "the daemon did not become ready again"
        time.sleep(0.2)


async def test_a_frozen_tpm_means_503_and_not_ready_until_it_thaws(
    tpm_token: TpmToken, tpm_daemon: Daemon, tpm_client: Client
) -> None:
    _wait_ready(tpm_daemon)
    tpm = tpm_token.tpm
    tpm.freeze()
    try:
        key = rsa_key()
        started = time.monotonic()
        r = await tpm_client.post(tpm_client.message(make_csr(key, "frozen", CHALLENGE), key))
        assert r.status_code == 503 and r.headers["Retry-After"], (r.status_code, r.text)
        assert time.monotonic() - started < 10
        assert _readyz(tpm_daemon) == 503
    finally:
        tpm.thaw()
    _wait_ready(tpm_daemon)
    rep, _ = await tpm_client.enroll("after-the-thaw", CHALLENGE)
    assert rep.status == PkiStatus.SUCCESS


async def test_enrollments_through_a_tpm_reset_get_a_certificate_or_503_and_nothing_is_lost(
    tpm_token: TpmToken, tpm_daemon: Daemon, tpm_client: Client
) -> None:
    """Six clients enroll without pause while the TPM resets: every answer is a certificate or a 503
    with Retry-After, every certificate handed out is in the store, and enrollments resume."""
    _wait_ready(tpm_daemon)
    answers: list[tuple[float, int, int | None]] = []  # (time, HTTP status, serial)
    stop = trio.Event()

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = rsa_key()
            r = await tpm_client.post(tpm_client.message(make_csr(key, f"load-{i}-{n}", CHALLENGE), key))
            serial = None
            if r.status_code == 200:
                rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=tpm_client.ca_certs)
                assert rep.status == PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
                serial = rep.certificates[0].serial_number
            else:
                assert r.status_code == 503 and r.headers["Retry-After"], (r.status_code, r.text)
            answers.append((time.monotonic(), r.status_code, serial))

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(client, i)
        await trio.sleep(1.5)
        await trio.to_thread.run_sync(tpm_token.tpm.restart_tpm)
        reset_done = time.monotonic()
        with trio.fail_after(30):
            while sum(1 for t, status, _ in answers if t > reset_done + 0.5 and status == 200) < 6:
                await trio.sleep(0.1)
        stop.set()
    statuses = [status for _, status, _ in answers]
    assert 503 in statuses, "the reset was not seen by any request"
    assert _readyz(tpm_daemon) == 200
    serials = [serial for _, _, serial in answers if serial is not None]
    with tpm_daemon.db() as db:
        stored = {row[0] for row in db.execute("SELECT serial FROM certificates")}
    assert {f"{s:x}" for s in serials} <= stored
