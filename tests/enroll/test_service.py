"""The enrollment service (scepd/enroll/service.py) without HTTP or a daemon: real request bytes from the
codec's client half, the RA and CA keys on the session's SoftHSM2 token, a real SQLite store, and a chain
whose outcome each test chooses. What a client did wrong must come back as a signed CertRep; a fault of
ours (token, store) must leave the service as an exception, which the HTTP layer turns into 503."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scepd.ca.authority import CertificateAuthority
from scepd.enroll.pipeline import Enrollment, Issued, Pending, Rejected
from scepd.enroll.profiles import Profile
from scepd.enroll.service import ScepService
from scepd.keys.base import KeyBackendError
from scepd.keys.pkcs11.pool import TokenPool
from scepd.scep import MalformedMessage
from scepd.scep.client import CertRep, build_pki_message, issuer_and_serial, make_self_signed, parse_cert_rep
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from scepd.store.base import StoreError
from scepd.store.sqlite import SqliteStore
from tests.support.ca import NOW, make_ca
from tests.support.scep_client import make_csr, rsa_key

Chain = Callable[[Enrollment], Awaitable[Issued]]


@pytest.fixture
async def ca(token_pool: TokenPool, ca_key_labels: dict[str, str]) -> CertificateAuthority:
    """CA and RA in one RSA key that may decrypt (the lone-CA layout) keeps the fixture small."""
    return await make_ca(token_pool.key(ca_key_labels["ra"]), "service test CA")


def service(ca: CertificateAuthority, store: SqliteStore, chain: Chain) -> ScepService:
    return ScepService(ca=ca, store=store, chain=chain, endpoint="unit", challenge_mode="static", clock=lambda: NOW)


def request(
    ca: CertificateAuthority, key: rsa.RSAPrivateKey, payload: bytes, message_type: MessageType = MessageType.PKCS_REQ
) -> bytes:
    csr_subject = x509.Name.from_rfc4514_string("CN=unit-device")
    return build_pki_message(
        message_type=message_type,
        payload=payload,
        transaction_id=secrets.token_hex(8),
        sender_nonce=os.urandom(16),
        recipient_certificate=ca.ra_certificate,
        signer_certificate=make_self_signed(key, csr_subject, dt.datetime.now(dt.UTC)),
        signer_key=key,
    )


def csr_request(ca: CertificateAuthority, key: rsa.RSAPrivateKey) -> bytes:
    csr = make_csr(key, "unit-device", "a-challenge")
    return request(ca, key, csr.public_bytes(serialization.Encoding.DER))


def reply(ca: CertificateAuthority, body: bytes, key: rsa.RSAPrivateKey) -> CertRep:
    return parse_cert_rep(body, decrypt_key=key, trusted_signers=[ca.ra_certificate])


async def test_an_issued_certificate_comes_back_enveloped_to_the_requester(
    ca: CertificateAuthority, store: SqliteStore
) -> None:
    seen: list[Enrollment] = []

    async def issue(enrollment: Enrollment) -> Issued:
        seen.append(enrollment)
        der = await ca.sign(ca.template(enrollment.csr, Profile(), enrollment.now))
        cert = x509.load_der_x509_certificate(der)
        return Issued(cert, der, cert.serial_number, enrollment)

    key = rsa_key()
    rep = reply(ca, await service(ca, store, issue).pki_operation(csr_request(ca, key)), key)
    assert rep.status is PkiStatus.SUCCESS
    [cert] = rep.certificates
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.public_key() == key.public_key()
    [enrollment] = seen
    assert (enrollment.endpoint, enrollment.challenge_mode, enrollment.now) == ("unit", "static", NOW)
    assert enrollment.challenge_password == "a-challenge"


@pytest.mark.parametrize(
    ("outcome", "status", "fail_info"),
    [
        (Rejected(FailInfo.BAD_REQUEST, "challenge refused"), PkiStatus.FAILURE, FailInfo.BAD_REQUEST),
        (Rejected(FailInfo.BAD_ALG, "key too small"), PkiStatus.FAILURE, FailInfo.BAD_ALG),
        (Pending(), PkiStatus.PENDING, None),
    ],
)
async def test_a_refusal_or_a_hold_is_a_signed_answer(
    ca: CertificateAuthority, store: SqliteStore, outcome: Exception, status: PkiStatus, fail_info: FailInfo | None
) -> None:
    async def chain(enrollment: Enrollment) -> Issued:
        raise outcome

    key = rsa_key()
    rep = reply(ca, await service(ca, store, chain).pki_operation(csr_request(ca, key)), key)
    assert (rep.status, rep.fail_info) == (status, fail_info)
    assert rep.certificates == []
    if isinstance(outcome, Rejected):
        assert rep.fail_info_text == outcome.reason


@pytest.mark.parametrize("fault", [KeyBackendError("token worker died"), StoreError("database is locked")])
async def test_a_fault_of_ours_is_raised_for_the_http_layer_not_answered(
    ca: CertificateAuthority, store: SqliteStore, fault: Exception
) -> None:
    async def chain(enrollment: Enrollment) -> Issued:
        raise fault

    with pytest.raises(type(fault)):
        await service(ca, store, chain).pki_operation(csr_request(ca, rsa_key()))


async def test_a_store_fault_on_get_cert_is_raised_too(ca: CertificateAuthority, store: SqliteStore) -> None:
    await store.close()  # every store call now fails
    body = request(ca, rsa_key(), issuer_and_serial(ca.certificate.subject, 1), MessageType.GET_CERT)

    async def unused(enrollment: Enrollment) -> Issued:
        raise AssertionError("GetCert does not enroll")

    with pytest.raises(StoreError):
        await service(ca, store, unused).pki_operation(body)


async def test_what_the_client_got_wrong_is_a_failure_reply_or_a_400(
    ca: CertificateAuthority, store: SqliteStore
) -> None:
    async def unused(enrollment: Enrollment) -> Issued:
        raise AssertionError("nothing here may reach the chain")

    svc = service(ca, store, unused)
    key = rsa_key()
    # A payload that is not a CSR: one "unreadable" answer, whatever was wrong inside the envelope.
    rep = reply(ca, await svc.pki_operation(request(ca, key, b"\x30\x03\x02\x01\x00")), key)
    assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)
    # An unknown certificate asked for by GetCert.
    body = request(ca, key, issuer_and_serial(ca.certificate.subject, 424242), MessageType.GET_CERT)
    rep = reply(ca, await svc.pki_operation(body), key)
    assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_CERT_ID)
    # Not SCEP at all: nothing to sign a reply to.
    with pytest.raises(MalformedMessage):
        await svc.pki_operation(b"not a pkiMessage")
