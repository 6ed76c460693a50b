"""PKCSReq end to end: real daemon, real token, real HTTP, our codec as the client."""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import subprocess

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scepd.keys.base import HashName, RsaPadding
from scepd.scep import ContentCipher
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon
from tests.support.scep_client import Client, make_csr, rsa_key


def stored(daemon: Daemon, serial: int) -> tuple[str, str, str] | None:
    with daemon.db() as db:
        row = db.execute(
            "SELECT transaction_id, subject, status FROM certificates WHERE serial = ?", (f"{serial:x}",)
        ).fetchone()
    return row


def assert_issued(client: Client, rep, cn: str) -> x509.Certificate:  # type: ignore[no-untyped-def]
    assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
    assert len(rep.certificates) == 1
    cert = rep.certificates[0]
    ca = client.ca_certs[-1]
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    return cert


async def test_caps_advertise_what_is_implemented(client: Client) -> None:
    caps = await client.caps()
    for cap in ("POSTPKIOperation", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"):
        assert cap in caps
    assert "GetNextCACert" not in caps  # not implemented, so not claimed


async def test_get_ca_cert_lone_ca_is_der(daemon_legacy: Daemon, legacy_client: Client) -> None:
    """A state directory of an earlier version: the lone CA, which also opens envelopes."""
    r = await legacy_client.http.get(legacy_client.url, params={"operation": "GetCACert"})
    assert r.headers["content-type"] == "application/x-x509-ca-cert"
    cert = x509.load_der_x509_certificate(r.content)
    assert cert == x509.load_pem_x509_certificate(daemon_legacy.ca_pem.read_bytes())
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_cert_sign and ku.crl_sign and ku.key_encipherment


async def test_get_ca_cert_default_is_ca_and_ra(daemon: Daemon, client: Client) -> None:
    """`scepd init` makes an RA: GetCACert is the certs-only form, RA first, and only the RA takes envelopes."""
    r = await client.http.get(client.url, params={"operation": "GetCACert"})
    assert r.headers["content-type"] == "application/x-x509-ca-ra-cert"
    ra, ca = client.ca_certs
    assert ca == x509.load_pem_x509_certificate(daemon.ca_pem.read_bytes())
    assert ra == x509.load_pem_x509_certificate(daemon.ra_pem.read_bytes())
    ra.verify_directly_issued_by(ca)
    ra_ku = ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ra_ku.digital_signature and ra_ku.key_encipherment and not ra_ku.key_cert_sign
    assert not ra.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_ku.key_cert_sign and ca_ku.crl_sign and not ca_ku.key_encipherment
    # The RA lives shorter than the CA, and never past it.
    assert ra.not_valid_after_utc < ca.not_valid_after_utc
    assert ra.not_valid_after_utc - ra.not_valid_before_utc <= dt.timedelta(days=731)


async def test_legacy_path_serves_the_same_endpoint(daemon: Daemon, client: Client) -> None:
    r = await client.http.get(daemon.base_url + "/cgi-bin/pkiclient.exe", params={"operation": "GetCACaps"})
    assert r.status_code == 200 and "SCEPStandard" in r.text


async def test_enroll_by_post_stores_before_reply(daemon: Daemon, client: Client) -> None:
    tid = secrets.token_hex(16)
    key = rsa_key()
    rep = await client.send(client.message(make_csr(key, "post-device", CHALLENGE), key, transaction_id=tid), key)
    cert = assert_issued(client, rep, "post-device")
    assert rep.transaction_id == tid
    assert cert.serial_number.bit_length() >= 64
    assert cert.public_key() == key.public_key()
    row = stored(daemon, cert.serial_number)
    assert row is not None and row[0] == tid and row[2] == "valid"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku


async def test_issued_certificate_verifies_with_openssl(daemon: Daemon, client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rep, _ = await client.enroll("openssl-verified", CHALLENGE)
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(rep.certificates[0].public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(["openssl", "verify", "-CAfile", str(daemon.ca_pem), str(pem)], capture_output=True, text=True)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("mangle", ["standard", "urlsafe", "unescaped-plus"])
async def test_enroll_by_get(client: Client, mangle: str) -> None:
    key = rsa_key()
    body = client.message(make_csr(key, f"get-{mangle}", CHALLENGE), key)
    b64 = base64.b64encode(body).decode()
    if mangle == "urlsafe":
        query = "message=" + base64.urlsafe_b64encode(body).decode().rstrip("=")
    elif mangle == "unescaped-plus":
        query = "message=" + b64  # '+' and '/' raw: '+' arrives as a space after form decoding
    else:
        query = httpx.QueryParams({"message": b64}).__str__()
    # Several kB in the query, as certmonger sends.
    assert len(query) > 2000
    r = await client.http.get(f"{client.url}?operation=PKIOperation&{query}")
    assert r.status_code == 200, r.text
    from scepd.scep.client import parse_cert_rep

    rep = parse_cert_rep(r.content, decrypt_key=key, trusted_signers=client.ca_certs)
    assert_issued(client, rep, f"get-{mangle}")


@pytest.mark.parametrize(
    "cipher", [ContentCipher.AES128_CBC, ContentCipher.AES192_CBC, ContentCipher.AES256_CBC, ContentCipher.DES3_CBC]
)
@pytest.mark.parametrize("padding", [RsaPadding.PKCS1V15, RsaPadding.OAEP])
async def test_ciphers_and_key_transport(ra_client: Client, cipher: ContentCipher, padding: RsaPadding) -> None:
    rep, _ = await ra_client.enroll(f"c-{cipher.name}-{padding.value}", CHALLENGE, cipher=cipher, padding=padding)
    assert_issued(ra_client, rep, f"c-{cipher.name}-{padding.value}")


@pytest.mark.parametrize("digest", [HashName.SHA1, HashName.SHA256, HashName.SHA512])
async def test_message_digests(client: Client, digest: HashName) -> None:
    rep, _ = await client.enroll(f"d-{digest.value}", CHALLENGE, digest=digest)
    assert_issued(client, rep, f"d-{digest.value}")


async def test_single_des_is_refused_by_default(client: Client) -> None:
    rep, _ = await client.enroll("old-des", CHALLENGE, cipher=ContentCipher.DES_CBC)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_ALG


async def test_wrong_challenge_fails_and_stores_nothing(daemon: Daemon, client: Client) -> None:
    before = daemon.db().execute("SELECT count(*) FROM certificates").fetchone()[0]
    rep, _ = await client.enroll("intruder", "not-the-challenge")
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert not rep.certificates
    after = daemon.db().execute("SELECT count(*) FROM certificates").fetchone()[0]
    assert after == before
    assert "not-the-challenge" not in daemon.log()


async def test_missing_challenge_fails(client: Client) -> None:
    rep, _ = await client.enroll("no-challenge", None)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST


async def test_broken_csr_signature_is_bad_message_check(client: Client) -> None:
    key = rsa_key()
    der = bytearray(make_csr(key, "broken", CHALLENGE).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the CSR's signature bits
    rep = await client.send(client.message(make_csr(key, "broken", CHALLENGE), key, payload=bytes(der)), key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


async def test_small_rsa_key_is_bad_alg(client: Client) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rep = await client.send(client.message(make_csr(key, "weak", CHALLENGE), key), key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_ALG


async def test_retry_with_same_transaction_returns_same_certificate(daemon: Daemon, client: Client) -> None:
    key = rsa_key()
    csr = make_csr(key, "retry", CHALLENGE)
    tid = secrets.token_hex(16)
    first = await client.send(client.message(csr, key, transaction_id=tid), key)
    second = await client.send(client.message(csr, key, transaction_id=tid), key)
    assert assert_issued(client, first, "retry") == assert_issued(client, second, "retry")
    with daemon.db() as db:
        assert db.execute("SELECT count(*) FROM certificates WHERE transaction_id = ?", (tid,)).fetchone()[0] == 1


async def test_eight_byte_nonce_is_echoed(client: Client) -> None:
    nonce = os.urandom(8)  # older iOS
    rep, _ = await client.enroll("ios-nonce", CHALLENGE, nonce=nonce)
    assert_issued(client, rep, "ios-nonce")
    assert rep.recipient_nonce == nonce


async def test_reply_always_has_content_type_attribute(client: Client) -> None:
    ok, _ = await client.enroll("ctype", CHALLENGE)
    bad, _ = await client.enroll("ctype-bad", "wrong")
    assert ok.has_content_type_attr and bad.has_content_type_attr


async def test_windows_signer_with_critical_aki(client: Client) -> None:
    key = rsa_key()
    csr = make_csr(key, "windows-aki", CHALLENGE)
    now = dt.datetime.now(dt.UTC)
    signer = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(csr.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=True)
        .sign(key, hashes.SHA256())
    )
    rep = await client.send(client.message(csr, key, signer=signer), key)
    assert_issued(client, rep, "windows-aki")


async def test_renewal_signed_by_issued_certificate(daemon: Daemon, client: Client) -> None:
    rep, old_key = await client.enroll("renew-me", CHALLENGE)
    old = assert_issued(client, rep, "renew-me")
    new_key = rsa_key(fresh=True)
    csr = make_csr(new_key, "renew-me", None)  # certmonger renews without a challenge
    body = client.message(csr, old_key, signer=old)  # type: ignore[arg-type]
    renewed = await client.send(body, old_key)  # type: ignore[arg-type]
    new = assert_issued(client, renewed, "renew-me")
    assert new.public_key() == new_key.public_key()
    assert stored(daemon, old.serial_number)[2] == "superseded"  # type: ignore[index]
    # RenewalReq as its own message type works the same way.
    again = await client.send(
        client.message(make_csr(new_key, "renew-me", None), new_key, signer=new, message_type=MessageType.RENEWAL_REQ),
        new_key,
    )
    assert_issued(client, again, "renew-me")


async def test_get_cert_by_issuer_and_serial(client: Client) -> None:
    from scepd.scep.client import issuer_and_serial

    rep, key = await client.enroll("fetch-me", CHALLENGE)
    cert = assert_issued(client, rep, "fetch-me")
    body = client.message(
        make_csr(key, "fetch-me", None),
        key,
        message_type=MessageType.GET_CERT,
        payload=issuer_and_serial(cert.issuer, cert.serial_number),
    )
    got = await client.send(body, key)
    assert got.status is PkiStatus.SUCCESS and got.certificates == [cert]
    missing = client.message(
        make_csr(key, "fetch-me", None),
        key,
        message_type=MessageType.GET_CERT,
        payload=issuer_and_serial(cert.issuer, 12345),
    )
    none = await client.send(missing, key)
    assert none.status is PkiStatus.FAILURE and none.fail_info is FailInfo.BAD_CERT_ID


async def test_poll_with_a_payload_that_is_not_issuer_and_subject_gets_the_unreadable_answer(client: Client) -> None:
    """A payload that does not parse is answered like an envelope that does not open (see test_hostile)."""
    from scepd.scep import UNREADABLE_TEXT
    from scepd.scep.client import issuer_and_serial

    key = rsa_key()
    ca = client.ca_certs[-1]
    body = client.message(
        make_csr(key, "x", None), key, message_type=MessageType.CERT_POLL, payload=issuer_and_serial(ca.subject, 1)
    )
    rep = await client.send(body, key)
    assert (rep.status, rep.fail_info, rep.fail_info_text) == (
        PkiStatus.FAILURE,
        FailInfo.BAD_MESSAGE_CHECK,
        UNREADABLE_TEXT,
    )


async def test_concurrent_enrollments(daemon_ra: Daemon, ra_client: Client) -> None:
    results: list[x509.Certificate] = []

    async def one(i: int) -> None:
        rep, _ = await ra_client.enroll(f"many-{i}", CHALLENGE)
        results.append(assert_issued(ra_client, rep, f"many-{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(48):
            nursery.start_soon(one, i)
    assert len({c.serial_number for c in results}) == 48
    for cert in results:
        assert stored(daemon_ra, cert.serial_number) is not None


async def test_poll_after_issue_returns_the_certificate_again(client: Client) -> None:
    """A client that lost the reply polls (GetCertInitial) with its transactionID and gets the same certificate."""
    from scepd.scep.client import make_self_signed

    key = rsa_key()
    csr = make_csr(key, "lost-reply", CHALLENGE)
    signer = make_self_signed(key, csr.subject, dt.datetime.now(dt.UTC))
    tid = secrets.token_hex(16)
    first = await client.send(client.message(csr, key, signer=signer, transaction_id=tid), key)
    cert = assert_issued(client, first, "lost-reply")
    again = await client.poll(csr, key, signer, tid)
    assert again.status is PkiStatus.SUCCESS and again.certificates == [cert]
    # Another key polling for that transaction learns nothing; an unknown transaction is badCertId.
    stranger = rsa_key(fresh=True)  # a key of the pool could be the requester's own
    stranger_csr = make_csr(stranger, "someone-else", None)
    other = await client.poll(
        stranger_csr, stranger, make_self_signed(stranger, stranger_csr.subject, dt.datetime.now(dt.UTC)), tid
    )
    assert other.status is PkiStatus.FAILURE and other.fail_info is FailInfo.BAD_CERT_ID
    unknown = await client.poll(csr, key, signer, secrets.token_hex(16))
    assert unknown.status is PkiStatus.FAILURE and unknown.fail_info is FailInfo.BAD_CERT_ID
