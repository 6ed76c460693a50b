"""Intune enrollments end to end: a real scepd, a real SoftHSM2 token, the fake Intune on loopback.

Every fault the fake can play ends in a clean FAILURE or a later success, and
never in a certificate issued without a Success validation.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scepd.scep.constants import FailInfo, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon, init_state, running
from tests.support.fake_intune.server import running_fake_intune
from tests.support.fake_intune.state import FakeIntune
from tests.support.scep_client import Client, connected, make_csr, rsa_key

INTUNE_PATH = "/intune"


def intune_toml(fake: FakeIntune, secret_file: Path, interval: float) -> str:
    return (
        fake.config_snippet(f"file:{secret_file}")
        + "timeout_seconds = 2\n"
        + "retries = 2\n"
        + "notification_budget_seconds = 3\n"
        + f"revocation_interval_seconds = {interval}\n"
        + "\n[endpoints.intune]\n"
        + f'path = "{INTUNE_PATH}"\n'
        + 'challenge = "intune"\n'
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeIntune]:
    with running_fake_intune() as f:
        yield f


@pytest.fixture(scope="module")
def intune_state(tmp_path_factory: pytest.TempPathFactory, fake: FakeIntune) -> Path:
    state = tmp_path_factory.mktemp("scepd-intune")
    secret = state / "intune-client-secret"
    secret.write_text(fake.client_secret or "")
    init_state(state, CHALLENGE, extra_toml=intune_toml(fake, secret, interval=0.3))
    return state


@pytest.fixture(scope="module")
def daemon_intune(intune_state: Path) -> Iterator[Daemon]:
    with running(intune_state, CHALLENGE, path=INTUNE_PATH) as d:
        yield d
    assert "Traceback" not in d.log(), d.log()


@pytest.fixture(autouse=True)
def clean_fake(fake: FakeIntune) -> None:
    fake.clear_faults()
    fake.set_discovery()


@pytest.fixture
async def client(daemon_intune: Daemon) -> AsyncIterator[Client]:
    async with connected(daemon_intune.url, timeout=60) as c:
        yield c


def serials(daemon: Daemon, status: str | None = None) -> set[int]:
    with daemon.db() as db:
        query = "SELECT serial FROM certificates" + (" WHERE status = ?" if status else "")
        return {int(r[0], 16) for r in db.execute(query, (status,) if status else ())}


def transaction_certificates(daemon: Daemon, tid: str) -> list[tuple[int, str]]:
    with daemon.db() as db:
        rows = db.execute("SELECT serial, status FROM certificates WHERE transaction_id = ?", (tid,)).fetchall()
    return [(int(s, 16), st) for s, st in rows]


def notifications(daemon: Daemon, tid: str) -> list[tuple[str, int, str]]:
    with daemon.db() as db:
        return db.execute(
            "SELECT kind, delivered, detail FROM intune_notifications WHERE transaction_id = ? ORDER BY id", (tid,)
        ).fetchall()


async def enroll(
    client: Client,
    fake: FakeIntune,
    cn: str,
    *,
    subject: str | None = None,
    tid: str | None = None,
    challenge: str | None = None,
    key=None,
):  # type: ignore[no-untyped-def]
    key = key or rsa_key()
    challenge = challenge or fake.mint_challenge(subject or f"CN={cn}", ttl=600)
    body = client.message(make_csr(key, cn, challenge), key, transaction_id=tid)
    rep = await client.send(body, key)
    return rep, challenge


async def test_device_enrolls_and_intune_hears_of_it(daemon_intune: Daemon, client: Client, fake: FakeIntune) -> None:
    rep, _ = await enroll(client, fake, "device-ok", tid="tid-ok")
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    cert = rep.certificates[0]
    assert cert.subject.rfc4514_string() == "CN=device-ok"
    validations = [c for c in fake.calls("validate") if c.status == 200]
    assert any(c.body["request"]["transactionId"] == "tid-ok" for c in validations)
    [success] = fake.notifications("success")["tid-ok"]
    sent = success.body
    assert int(sent["certificateSerialNumber"], 16) == cert.serial_number
    assert sent["certificateThumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert sent["certificateExpirationDateUtc"].startswith(cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S."))
    assert success.validated
    assert transaction_certificates(daemon_intune, "tid-ok") == [(cert.serial_number, "valid")]
    assert notifications(daemon_intune, "tid-ok") == [("success", 1, "Success")]


@pytest.mark.parametrize("case", ["subject-mismatch", "expired", "reused", "unknown", "untargeted", "no-challenge"])
async def test_rejected_challenges_issue_nothing(
    daemon_intune: Daemon, client: Client, fake: FakeIntune, case: str
) -> None:
    cn, tid = f"device-{case}", f"tid-{case}"
    key = rsa_key()
    if case == "subject-mismatch":
        challenge = fake.mint_challenge("CN=someone-else", ttl=600)
    elif case == "expired":
        challenge = fake.mint_challenge(f"CN={cn}", ttl=1)
        fake.advance_clock(5)
    elif case == "reused":
        challenge = fake.mint_challenge(f"CN={cn}", ttl=600)
        first, _ = await enroll(client, fake, cn, challenge=challenge, tid=tid + "-first", key=key)
        assert first.status is PkiStatus.SUCCESS
    elif case == "unknown":
        challenge = "not-a-challenge-intune-minted"
    elif case == "untargeted":
        challenge = fake.mint_challenge(f"CN={cn}", ttl=600, targeted=False)
    else:
        challenge = None
    before = serials(daemon_intune)
    body = client.message(make_csr(key, cn, challenge), key, transaction_id=tid)
    rep = await client.send(body, key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text and "Intune rejected" in rep.fail_info_text
    assert serials(daemon_intune) == before
    assert transaction_certificates(daemon_intune, tid) == []
    assert tid not in fake.notifications("success")


@pytest.mark.parametrize(
    ("route", "fault", "recovers"),
    [
        ("validate", "500-once", True),
        ("validate", "429-once", True),
        ("validate", "drop-once", True),
        ("validate", "401-once", True),
        ("token", "500-once", True),
        ("discovery", "500-once", True),
        ("validate", "500-always", False),
        ("validate", "slow", False),
        ("validate", "drop-always", False),
        ("discovery", "no-provider", False),
    ],
)
async def test_faults_end_in_failure_or_later_success(
    daemon_intune: Daemon, client: Client, fake: FakeIntune, route: str, fault: str, recovers: bool
) -> None:
    tid = f"tid-{route}-{fault}"
    if route in ("token", "discovery"):
        fake.expire_tokens()  # make the daemon come back for a token, and so rediscover after the 401
    match fault:
        case "500-once":
            fake.fail(route, 500, times=1)
        case "429-once":
            fake.fail(route, 429, times=1, retry_after=0.2)
        case "401-once":
            fake.fail(route, 401, times=1)
        case "drop-once":
            fake.drop(route, times=1)
        case "500-always":
            fake.fail(route, 500, times=100)
        case "drop-always":
            fake.drop(route, times=100)
        case "slow":
            fake.slow(route, 5.0, times=100)
        case "no-provider":
            fake.expire_tokens()
            fake.set_discovery(omit=["ScepRequestValidationFEService"])
            fake.fail("validate", 404, times=1)  # the cached service answers 404: the daemon rediscovers
    before = serials(daemon_intune)
    started = time.monotonic()
    rep, _ = await enroll(client, fake, f"device-{route}-{fault}", tid=tid)
    assert time.monotonic() - started < 30  # bounded: timeouts and retries are bounded
    fake.clear_faults()
    if recovers:
        assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
        assert len(fake.notifications("success").get(tid, [])) == 1
    else:
        assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST, rep
        assert serials(daemon_intune) == before
        assert tid not in fake.notifications("success")
    # Whatever happened, nothing was issued without a Success validation for this transaction.
    issued = transaction_certificates(daemon_intune, tid)
    validated = [c for c in fake.calls("validate") if c.status == 200 and c.body["request"]["transactionId"] == tid]
    assert not issued or validated


async def test_success_notification_failure_withholds_certificate(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    fake.fail("success", 500, times=100)
    rep, _ = await enroll(client, fake, "device-unnotified", tid="tid-unnotified")
    fake.clear_faults()
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert "not delivered" in (rep.fail_info_text or "")
    [(serial, status)] = transaction_certificates(daemon_intune, "tid-unnotified")
    assert status == "revoked"  # issued and stored, never delivered, so not left valid
    [(kind, delivered, detail)] = notifications(daemon_intune, "tid-unnotified")
    assert (kind, delivered) == ("success", 0) and "http_500" in detail


async def test_success_notification_budget_bounds_the_wait_and_withholds(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    """Each attempt alone fits its 2 s timeout, but three of them would take over 6 s: the 3 s budget
    for the whole notification runs out first, and the certificate is revoked, not delivered."""
    fake.slow("success", 1.9, times=100, status=500)
    started = time.monotonic()
    rep, _ = await enroll(client, fake, "device-budget", tid="tid-budget")
    elapsed = time.monotonic() - started
    fake.clear_faults()
    assert rep.status is PkiStatus.FAILURE and "not delivered" in (rep.fail_info_text or "")
    assert elapsed < 5.5, elapsed
    [(serial, status)] = transaction_certificates(daemon_intune, "tid-budget")
    assert status == "revoked"
    [(kind, delivered, detail)] = notifications(daemon_intune, "tid-budget")
    assert (kind, delivered) == ("success", 0) and detail.startswith("budget")


async def test_policy_refusal_after_validation_notifies_failure(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rep, _ = await enroll(client, fake, "device-small-key", tid="tid-small", key=small)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_ALG
    [failure] = fake.notifications("failure")["tid-small"]
    sent = failure.body
    assert sent["hResult"] == 0x80070057 and 0 < len(sent["errorDescription"]) <= 255
    assert transaction_certificates(daemon_intune, "tid-small") == []
    [(kind, delivered, _)] = notifications(daemon_intune, "tid-small")
    assert (kind, delivered) == ("failure", 1)


async def test_resent_request_gets_same_certificate_without_revalidation(client: Client, fake: FakeIntune) -> None:
    key = rsa_key()
    challenge = fake.mint_challenge("CN=device-resend", ttl=600)
    body = client.message(make_csr(key, "device-resend", challenge), key, transaction_id="tid-resend")
    first = await client.send(body, key)
    validations = len(fake.calls("validate"))
    second = await client.send(body, key)
    assert first.status is second.status is PkiStatus.SUCCESS
    assert first.certificates[0].serial_number == second.certificates[0].serial_number
    assert len(fake.calls("validate")) == validations


async def test_concurrent_enrollments_overlap_their_intune_calls(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    """With Intune answering slowly, 8 devices at once each get a certificate (correctness;
    the overlap itself is measured by the benchmark, not timed here)."""
    fake.slow("validate", 0.2, times=8)
    results: list[PkiStatus] = []

    async def one(n: int) -> None:
        rep, _ = await enroll(client, fake, f"device-par-{n}", tid=f"tid-par-{n}")
        results.append(rep.status)

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(one, n)
    assert results == [PkiStatus.SUCCESS] * 8


async def test_tokens_and_discovery_are_cached_and_refreshed_ahead_of_expiry(client: Client, fake: FakeIntune) -> None:
    await enroll(client, fake, "device-warm", tid="tid-warm")  # tokens and the service map are now cached
    tokens, discoveries = len(fake.calls("token")), len(fake.calls("discovery"))
    for n in range(3):
        rep, _ = await enroll(client, fake, f"device-cached-{n}", tid=f"tid-cached-{n}")
        assert rep.status is PkiStatus.SUCCESS
    assert len(fake.calls("token")) == tokens and len(fake.calls("discovery")) == discoveries

    fake.set_token_lifetime(4)  # short-lived tokens are refreshed at half their life
    fake.expire_tokens()
    await enroll(client, fake, "device-short-token", tid="tid-short-token")
    issued = len(fake.calls("token"))
    await trio.sleep(2.5)
    scep_calls = len(fake.calls("validate"))
    rep, _ = await enroll(client, fake, "device-refreshed", tid="tid-refreshed")
    fake.set_token_lifetime(3599)
    assert rep.status is PkiStatus.SUCCESS
    assert len(fake.calls("token")) > issued  # fetched again before it expired ...
    assert all(c.status == 200 for c in fake.calls("validate")[scep_calls:])  # ... so no 401 on the way


async def test_tenant_without_pki_connector_still_validates_and_notifies(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    fake.set_discovery(omit=["PkiConnectorFEService"])
    fake.expire_tokens()  # the next call gets a 401, so the daemon rediscovers: now without the connector
    rep, _ = await enroll(client, fake, "device-no-pki", tid="tid-no-pki")
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    assert len(fake.notifications("success")["tid-no-pki"]) == 1
    await wait_for(lambda: "event=intune_revocation_sync_off" in daemon_intune.log())
    assert daemon_intune.alive()
    fake.set_discovery()
    fake.expire_tokens()  # rediscover with the connector, for the tests after this one
    rep, _ = await enroll(client, fake, "device-pki-back", tid="tid-pki-back")
    assert rep.status is PkiStatus.SUCCESS
    await wait_for(lambda: "event=intune_revocation_sync_on" in daemon_intune.log())


async def test_static_endpoint_beside_intune_endpoint(daemon_intune: Daemon, fake: FakeIntune) -> None:
    """One daemon, two SCEP paths: Intune devices on /intune, other clients on /scep with the static secret."""
    validations = len(fake.calls("validate"))
    async with httpx.AsyncClient(timeout=60) as http:
        c = Client(daemon_intune.base_url + "/scep", http)
        await c.get_ca_cert()
        rep, _ = await c.enroll("static-client", CHALLENGE)
    assert rep.status is PkiStatus.SUCCESS
    assert len(fake.calls("validate")) == validations


def test_certificate_credential_signed_on_the_token(tmp_path_factory: pytest.TempPathFactory, fake: FakeIntune) -> None:
    """The Entra app authenticates with a JWT assertion whose key was generated on the token."""
    from tests.support.daemon import scepd

    state = tmp_path_factory.mktemp("scepd-intune-cert")
    init_state(state, CHALLENGE)
    out = scepd("intune", "credential", "--config", str(state / "scepd.toml"), "--out", str(state / "intune-app.pem"))
    assert "generated on the token" in out.stdout
    app_cert = x509.load_pem_x509_certificate((state / "intune-app.pem").read_bytes())
    fake.add_client_certificate(app_cert)
    toml = intune_toml(fake, state / "unused", interval=3600).replace(
        f'client_secret = "file:{state / "unused"}"',
        'client_certificate = "intune-app.pem"\nclient_key = "pkcs11:token=scepd;object=scepd-intune;type=private"',
    )
    assert "client_secret" not in toml
    config = state / "scepd.toml"
    config.write_text(config.read_text() + "\n" + toml)
    tokens_before = len(fake.calls("token"))

    async def enroll_one(url: str) -> PkiStatus:
        async with httpx.AsyncClient(timeout=60) as http:
            c = Client(url, http)
            await c.get_ca_cert()
            rep, _ = await enroll(c, fake, "device-jwt", tid="tid-jwt")
            return rep.status

    with running(state, CHALLENGE, path=INTUNE_PATH) as d:
        assert trio.run(enroll_one, d.url) is PkiStatus.SUCCESS
        log = d.log()
    # The fake is shared: this module's Intune daemon (client secret) may fetch a token meanwhile.
    # This daemon has no secret configured, so its calls are the ones carrying an assertion.
    token_calls = [c for c in fake.calls("token")[tokens_before:] if "client_assertion" in c.body]
    assert token_calls and all(c.status == 200 for c in token_calls)
    assert all("client_secret" not in c.body for c in token_calls)
    # PS256 with x5t#S256 by default, signed RSA-PSS on the token: no fallback to RS256.
    headers = [
        json.loads(base64.urlsafe_b64decode(c.body["client_assertion"].split(".")[0] + "==")) for c in token_calls
    ]
    assert {h["alg"] for h in headers} == {"PS256"} and all("x5t#S256" in h for h in headers)
    assert "event=intune_assertion_fallback" not in log


def test_certmonger_enrolls_with_intune_challenge(daemon_intune: Daemon, fake: FakeIntune, tmp_path: Path) -> None:
    """A client we did not write, carrying a multi-kB Intune challenge in a GET query."""
    from tests.support.external import certmonger, openssl_cli, scenarios

    cn = scenarios.unique_cn("intune-cm")
    challenge = fake.mint_challenge(f"CN={cn}", ttl=600)
    assert len(challenge) > 2000
    with certmonger.CertmongerInstance(tmp_path / "cm") as cm:
        cm.add_scep_ca("intune", daemon_intune.url, signing_ca=daemon_intune.ca_pem)
        res = cm.request("intune", subject=f"CN={cn}", challenge=challenge, timeout=60)
        assert res.status == "MONITORING", f"{res.listing}\n{cm.log_tail(60)}"
    assert res.cert_path is not None
    assert openssl_cli.verify(res.cert_path, daemon_intune.ca_pem)
    cert = x509.load_pem_x509_certificate(res.cert_path.read_bytes())
    assert cert.serial_number in serials(daemon_intune, "valid")
    notified = [n for ns in fake.notifications("success").values() for n in ns]
    assert any(int(n.body["certificateSerialNumber"], 16) == cert.serial_number for n in notified)


async def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.1)


async def test_revocation_requests_are_applied_uploaded_and_listed_in_crl(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    rep, _ = await enroll(client, fake, "device-wiped", tid="tid-wiped")
    assert rep.status is PkiStatus.SUCCESS
    serial = rep.certificates[0].serial_number
    wiped = fake.revoke_notified("tid-wiped")
    unknown = fake.queue_revocation("0BADC0FFEE", issuer_name=rep.certificates[0].issuer.rfc4514_string())
    await wait_for(lambda: all(fake.revocation_results().get(c) for c in (wiped, unknown)))
    [result] = fake.revocation_results()[wiped]
    assert result.succeeded and result.error_code == "None"
    [missing] = fake.revocation_results()[unknown]
    assert not missing.succeeded and missing.error_code == "CertificateNotFoundError"
    assert serial in serials(daemon_intune, "revoked")
    # The daemon asks for exactly the name its success notification sent (the shared fake also
    # serves this module's other daemon: every filter is a name some notification sent).
    [success] = fake.notifications("success")["tid-wiped"]
    sent = {n.body["issuingCertificateAuthority"] for ns in fake.notifications("success").values() for n in ns}
    filters = {c.body["downloadParameters"]["issuerName"] for c in fake.calls("download")}
    assert success.body["issuingCertificateAuthority"] in filters and filters <= sent
    # A second request for the same certificate: Conflict.
    again = fake.queue_revocation(format(serial, "X"), issuer_name=rep.certificates[0].issuer.rfc4514_string())
    await wait_for(lambda: bool(fake.revocation_results().get(again)))
    assert fake.revocation_results()[again][0].error_code == "ConflictError"

    async def listed() -> bool:
        r = httpx.get(daemon_intune.base_url + "/crl/ca.crl", timeout=10)
        crl = x509.load_der_x509_crl(r.content)
        return crl.get_revoked_certificate_by_serial_number(serial) is not None

    with trio.fail_after(20):
        while not await listed():
            await trio.sleep(0.2)


async def test_revocation_loop_outlives_an_intune_outage_while_the_daemon_serves(
    daemon_intune: Daemon, client: Client, fake: FakeIntune
) -> None:
    mark = len(daemon_intune.log())
    fake.fail("download", 500, times=None)
    rep, _ = await enroll(client, fake, "device-outage", tid="tid-outage")
    assert rep.status is PkiStatus.SUCCESS  # the daemon serves through the sync's outage
    context = fake.revoke_notified("tid-outage")
    await wait_for(lambda: daemon_intune.log()[mark:].count("event=intune_revocation_sync_failed") >= 1)
    await trio.sleep(1.0)  # several more failed rounds at the 0.3 s interval
    fake.clear_faults()
    await wait_for(lambda: bool(fake.revocation_results().get(context)))
    await wait_for(lambda: "event=intune_revocation_sync_recovered" in daemon_intune.log()[mark:])
    log = daemon_intune.log()[mark:]
    assert log.count("event=intune_revocation_sync_failed") == 1, log  # once per episode
    assert "kind=http_500" in log and daemon_intune.alive()
    assert rep.certificates[0].serial_number in serials(daemon_intune, "revoked")


def test_revocation_survives_outage_and_restart(intune_state: Path, daemon_intune: Daemon, fake: FakeIntune) -> None:
    """Uploads fail, the daemon restarts, Intune re-offers the request: it is applied once and
    acknowledged once, with its first outcome (not a Conflict)."""

    async def enroll_one() -> x509.Certificate:
        async with httpx.AsyncClient(timeout=60) as http:
            c = Client(daemon_intune.url, http)
            await c.get_ca_cert()
            rep, _ = await enroll(c, fake, "device-restart", tid="tid-restart")
            assert rep.status is PkiStatus.SUCCESS
            return rep.certificates[0]

    cert = trio.run(enroll_one)
    fake.fail("upload", 500, times=1000)
    context = fake.revoke_notified("tid-restart")
    deadline = time.monotonic() + 20
    while cert.serial_number not in serials(daemon_intune, "revoked"):
        assert time.monotonic() < deadline, "not revoked while Intune refuses uploads"
        time.sleep(0.1)
    assert not fake.revocation_results().get(context)
    daemon_intune.proc.terminate()
    daemon_intune.proc.wait(15)
    fake.clear_faults()
    with running(intune_state, CHALLENGE, path=INTUNE_PATH) as again:
        deadline = time.monotonic() + 20
        while not fake.revocation_results().get(context):
            assert time.monotonic() < deadline, again.log()
            time.sleep(0.1)
        time.sleep(1.0)  # a few more sync rounds: nothing further may be uploaded for it
        results = fake.revocation_results()[context]
        assert [(r.succeeded, r.error_code) for r in results] == [(True, "None")]
        with again.db() as db:
            [(outcome, uploaded)] = db.execute(
                "SELECT outcome, uploaded_at IS NOT NULL FROM intune_revocations WHERE request_context = ?",
                (context,),
            ).fetchall()
        assert (outcome, uploaded) == ("revoked", 1)
        assert "Traceback" not in again.log(), again.log()


@pytest.fixture(scope="module")
def cli_state(tmp_path_factory: pytest.TempPathFactory, fake: FakeIntune) -> Path:
    """A configured state with no daemon running: the admin commands open token and store alone."""
    state = tmp_path_factory.mktemp("scepd-intune-cli")
    secret = state / "intune-client-secret"
    secret.write_text(fake.client_secret or "")
    init_state(state, CHALLENGE, extra_toml=intune_toml(fake, secret, interval=3600))
    return state


def intune_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from tests.support.daemon import scepd

    return scepd("intune", *args, "--config", str(state / "scepd.toml"), check=False)


def test_intune_check_prints_endpoints_and_permissions(cli_state: Path, fake: FakeIntune) -> None:
    out = intune_cli(cli_state, "check")
    assert out.returncode == 0, out.stderr
    assert fake.scep_service_url in out.stdout and fake.pki_service_url in out.stdout
    lines = out.stdout.splitlines()
    assert any(line.startswith("ok") and "scep_challenge_provider" in line for line in lines), out.stdout
    assert any(line.startswith("ok") and "Application.Read.All" in line for line in lines), out.stdout

    fake.set_roles(intune=[])  # admin consent for the Intune role missing
    try:
        out = intune_cli(cli_state, "check")
    finally:
        fake.set_roles(intune=["scep_challenge_provider"])
    assert out.returncode == 1
    [failed] = [line for line in out.stdout.splitlines() if line.startswith("FAILED")]
    assert "scep_challenge_provider" in failed and "HTTP 401" in failed and "client-request-id" in failed
    assert "Traceback" not in out.stdout + out.stderr


def test_intune_sync_error_is_one_line(cli_state: Path, fake: FakeIntune) -> None:
    status = 415  # what Intune answered when `scepd intune sync` printed a traceback
    fake.fail("download", status, times=None)
    out = intune_cli(cli_state, "sync")
    fake.clear_faults()
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    # Log events before it carry each exchange's client-request-id; the error itself is one line.
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("scepd: intune sync: Intune: download_revocations: HTTP " + str(status))
    assert "client-request-id" in line


def test_intune_commands_and_daemon_wiring_use_the_configured_proxy(cli_state: Path, tmp_path: Path) -> None:
    """The daemon and the admin commands build their Intune client the same way (wiring.intune_http),
    with the proxy's credentials from a secret source; a fresh fake sees only proxied requests."""
    from tests.support.tinyproxy import VIA_NAME, tinyproxy

    with running_fake_intune() as own, tinyproxy(tmp_path / "proxy") as proxy:
        (cli_state / "proxy-credentials").write_text(f"{proxy.user}:{proxy.password}\n")
        config = (cli_state / "scepd.toml").read_text()
        start = config.index("[intune]")
        end = config.index("[endpoints.intune]")
        table = own.config_snippet(f"file:{cli_state / 'own-client-secret'}")
        (cli_state / "own-client-secret").write_text(own.client_secret or "")
        proxied = (
            config[:start]
            + table
            + f'proxy = "{proxy.url}"\nproxy_credentials = "file:proxy-credentials"\n\n'
            + config[end:]
        )
        (cli_state / "scepd-proxy.toml").write_text(proxied)
        from tests.support.daemon import scepd

        out = scepd("intune", "check", "--config", str(cli_state / "scepd-proxy.toml"), check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        calls = own.calls()
    assert {c.route for c in calls} >= {"token", "discovery", "validate"}
    assert all(VIA_NAME in c.headers.get("via", "") for c in calls)
