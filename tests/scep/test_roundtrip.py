"""Client -> server -> client through the codec, one concern per test."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.keys.base import HashName, OaepParams, RsaPadding
from scepd.scep import (
    ContentCipher,
    build_cert_rep,
    build_certs_only,
    caps_text,
    open_envelope,
    parse_certs_only,
    parse_issuer_and_serial,
    parse_issuer_and_subject,
    parse_pki_message,
    sign_cert_rep,
)
from scepd.scep.client import issuer_and_serial, issuer_and_subject, parse_cert_rep
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.scep.conftest import NOW, Party, issue, name, request, serve


def issued_for(ra: Party, requester: Party) -> bytes:
    assert isinstance(ra.key, rsa.RSAPrivateKey)
    return issue(requester.key, "device-1", ra.key, ra.cert.subject).public_bytes(Encoding.DER)


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("padding", list(RsaPadding))
async def test_pkcsreq_round_trip(
    ra: Party, requester: Party, csr_der: bytes, cipher: ContentCipher, padding: RsaPadding
) -> None:
    oaep = OaepParams() if padding is RsaPadding.OAEP else None
    body = request(ra, requester, csr_der, cipher=cipher, padding=padding, oaep=oaep, transaction_id="tid-1")
    msg = parse_pki_message(body)
    assert msg.message_type is MessageType.PKCS_REQ and msg.transaction_id == "tid-1"
    assert msg.envelope is not None
    assert msg.envelope.cipher is cipher and msg.envelope.padding is padding and msg.envelope.oaep == oaep
    assert len(msg.envelope.iv) == cipher.block_size
    cert = issued_for(ra, requester)
    payload, reply = await serve(ra, body, issued=[cert])
    assert payload == csr_der
    rep = parse_cert_rep(reply, decrypt_key=requester.key, trusted_signers=[ra.cert])  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS and rep.fail_info is None
    assert [c.public_bytes(Encoding.DER) for c in rep.certificates] == [cert]
    assert rep.transaction_id == "tid-1" and rep.recipient_nonce == msg.sender_nonce
    assert rep.message_type is MessageType.CERT_REP and rep.signer_certificate == ra.cert
    # The reply envelope mirrors what the client used.
    inner = cms.ContentInfo.load(reply)["content"]["encap_content_info"]["content"].native
    env = cms.ContentInfo.load(inner)["content"]
    assert env["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].dotted == cipher.oid
    transport = env["recipient_infos"][0].chosen["key_encryption_algorithm"]["algorithm"].dotted
    assert transport == ("1.2.840.113549.1.1.7" if padding is RsaPadding.OAEP else "1.2.840.113549.1.1.1")


async def test_oaep_sha256_params_round_trip(ra: Party, requester: Party, csr_der: bytes) -> None:
    oaep = OaepParams(hash=HashName.SHA256, mgf_hash=HashName.SHA256, label=b"scep")
    body = request(ra, requester, csr_der, padding=RsaPadding.OAEP, oaep=oaep)
    msg = parse_pki_message(body)
    assert msg.envelope is not None and msg.envelope.oaep == oaep
    assert await open_envelope(msg.envelope, ra.soft) == csr_der


@pytest.mark.parametrize("digest", list(HashName))
async def test_each_digest(ra: Party, requester: Party, csr_der: bytes, digest: HashName) -> None:
    body = request(ra, requester, csr_der, digest=digest)
    assert parse_pki_message(body).digest is digest
    _, reply = await serve(ra, body, issued=[issued_for(ra, requester)])
    rep = parse_cert_rep(reply, decrypt_key=requester.key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS and len(rep.certificates) == 1
    signer_info = cms.ContentInfo.load(reply)["content"]["signer_infos"][0]
    assert signer_info["digest_algorithm"]["algorithm"].native == digest.value


@pytest.mark.parametrize("digest", [HashName.SHA1, HashName.SHA256, HashName.SHA384])
async def test_ec_reply_signer(ec_ra: Party, ra: Party, requester: Party, csr_der: bytes, digest: HashName) -> None:
    body = request(ra, requester, csr_der, digest=digest)
    msg = parse_pki_message(body)
    draft = build_cert_rep(
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.sender_nonce,
        sender_nonce=os.urandom(16),
        status=PkiStatus.SUCCESS,
        certificates=[issued_for(ra, requester)],
        recipient_certificate=msg.signer_certificate,
        signer_certificate=ec_ra.cert,
        digest=digest,
    )
    reply = await sign_cert_rep(draft, ec_ra.soft)
    signer_info = cms.ContentInfo.load(reply)["content"]["signer_infos"][0]
    assert signer_info["signature_algorithm"]["algorithm"].native == f"{digest.value}_ecdsa"
    rep = parse_cert_rep(reply, decrypt_key=requester.key, trusted_signers=[ec_ra.cert])  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS and rep.signer_certificate == ec_ra.cert


async def test_ec_request_signer(ra: Party, ec_ra: Party, csr_der: bytes) -> None:
    """An EC-keyed client signer verifies (the reply cannot be enveloped to it, which is the server's call)."""
    body = request(ra, ec_ra, csr_der)
    msg = parse_pki_message(body)
    assert msg.signer_certificate == ec_ra.cert


async def test_failure_carries_fail_info_and_text(ra: Party, requester: Party, request_der: bytes) -> None:
    msg = parse_pki_message(request_der)
    draft = build_cert_rep(
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.sender_nonce,
        sender_nonce=os.urandom(16),
        status=PkiStatus.FAILURE,
        fail_info=FailInfo.BAD_REQUEST,
        fail_info_text="challende wrong — nope",
        signer_certificate=ra.cert,
    )
    reply = await sign_cert_rep(draft, ra.soft)
    rep = parse_cert_rep(reply, decrypt_key=requester.key)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text == "challende wrong — nope"
    assert rep.certificates == [] and rep.has_content_type_attr
    encap = cms.ContentInfo.load(reply)["content"]["encap_content_info"]
    # Present but empty: OpenSSL's PKCS7_verify (certmonger) rejects absent content.
    assert encap["content_type"].native == "data" and encap["content"].native == b""


async def test_pending_has_empty_content(ra: Party, requester: Party, request_der: bytes) -> None:
    _, reply = await serve(ra, request_der, status=PkiStatus.PENDING)
    rep = parse_cert_rep(reply)
    assert rep.status is PkiStatus.PENDING and rep.fail_info is None and rep.has_content_type_attr
    assert cms.ContentInfo.load(reply)["content"]["encap_content_info"]["content"].native == b""


def test_fail_info_only_with_failure(ra: Party) -> None:
    with pytest.raises(ValueError):
        build_cert_rep(
            transaction_id="t",
            recipient_nonce=b"n",
            sender_nonce=b"s",
            status=PkiStatus.FAILURE,
            signer_certificate=ra.cert,
        )
    with pytest.raises(ValueError):
        build_cert_rep(
            transaction_id="t",
            recipient_nonce=b"n",
            sender_nonce=b"s",
            status=PkiStatus.SUCCESS,
            signer_certificate=ra.cert,
        )


async def test_eight_byte_nonce_echoed(ra: Party, requester: Party, csr_der: bytes) -> None:
    nonce = os.urandom(8)
    body = request(ra, requester, csr_der, sender_nonce=nonce)
    assert parse_pki_message(body).sender_nonce == nonce
    _, reply = await serve(ra, body, issued=[issued_for(ra, requester)])
    rep = parse_cert_rep(reply, decrypt_key=requester.key)  # type: ignore[arg-type]
    assert rep.recipient_nonce == nonce and len(rep.sender_nonce) == 16


async def test_signer_with_critical_aki(ra: Party, requester: Party, csr_der: bytes) -> None:
    key = requester.key
    signer = (
        x509.CertificateBuilder()
        .subject_name(name("win"))
        .issuer_name(name("win"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=True)
        .sign(key, hashes.SHA256())
    )
    msg = parse_pki_message(request(ra, Party(key, signer), csr_der))
    assert msg.signer_certificate == signer
    aki = msg.signer_certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert aki.critical


async def test_reply_attributes_and_strict_der(ra: Party, requester: Party, request_der: bytes) -> None:
    _, reply = await serve(ra, request_der, issued=[issued_for(ra, requester)])
    signed = cms.ContentInfo.load(reply)["content"]
    attrs = {a["type"].dotted: a for a in signed["signer_infos"][0]["signed_attrs"]}
    assert {
        "1.2.840.113549.1.9.3",
        "1.2.840.113549.1.9.4",
        "2.16.840.1.113733.1.9.2",
        "2.16.840.1.113733.1.9.3",
        "2.16.840.1.113733.1.9.5",
        "2.16.840.1.113733.1.9.6",
        "2.16.840.1.113733.1.9.7",
    } <= set(attrs)
    # messageType, pkiStatus and transactionID are PrintableString (tag 0x13).
    for oid in ("2.16.840.1.113733.1.9.2", "2.16.840.1.113733.1.9.3", "2.16.840.1.113733.1.9.7"):
        assert attrs[oid]["values"][0].dump()[0] == 0x13
    assert attrs["2.16.840.1.113733.1.9.2"]["values"][0].dump()[2:] == b"3"
    assert signed["certificates"][0].chosen.dump() == ra.der
    # encryptedContent [0] IMPLICIT OCTET STRING must be primitive: tag 0x80, not 0xa0.
    env = cms.ContentInfo.load(signed["encap_content_info"]["content"].native)["content"]
    assert env["encrypted_content_info"]["encrypted_content"].dump()[0] == 0x80
    # The reply re-encodes to itself: it is DER already.
    assert cms.ContentInfo.load(reply).dump(force=True) == reply


async def test_extra_certificates_are_included(ra: Party, ec_ra: Party, request_der: bytes) -> None:
    _, reply = await serve(ra, request_der, status=PkiStatus.PENDING, extra_certificates=[ec_ra.der])
    certs = [c.chosen.dump() for c in cms.ContentInfo.load(reply)["content"]["certificates"]]
    assert certs == [ra.der, ec_ra.der]


def test_certs_only_round_trip(ra: Party, ec_ra: Party) -> None:
    blob = build_certs_only([ra.der, ec_ra.der])
    assert parse_certs_only(blob) == [ra.cert, ec_ra.cert]
    signed = cms.ContentInfo.load(blob)["content"]
    assert len(signed["signer_infos"]) == 0 and not signed["encap_content_info"]["content"]


def test_payload_helpers_round_trip(ra: Party) -> None:
    issuer, serial = parse_issuer_and_serial(issuer_and_serial(ra.cert.subject, 0x1234567890ABCDEF))
    assert issuer == ra.cert.subject and serial == 0x1234567890ABCDEF
    issuer, subject = parse_issuer_and_subject(issuer_and_subject(ra.cert.subject, name("device-1")))
    assert issuer == ra.cert.subject and subject == name("device-1")


async def test_get_cert_message_round_trip(ra: Party, requester: Party) -> None:
    payload = issuer_and_serial(ra.cert.subject, 42)
    body = request(ra, requester, payload, message_type=MessageType.GET_CERT)
    msg = parse_pki_message(body)
    assert msg.message_type is MessageType.GET_CERT and msg.envelope is not None
    assert parse_issuer_and_serial(await open_envelope(msg.envelope, ra.soft)) == (ra.cert.subject, 42)


def test_caps_text() -> None:
    assert caps_text(["POSTPKIOperation", "SHA-256", "AES", ""]) == b"POSTPKIOperation\nSHA-256\nAES\n"


def _tlv(tag: bytes, body: bytes) -> bytes:
    n = len(body)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return tag + length + body


def _indefinite(tag: bytes, *parts: bytes) -> bytes:
    return tag + b"\x80" + b"".join(parts) + b"\x00\x00"


def to_ber(der: bytes, chunk: int = 100) -> bytes:
    """Re-encode a request as streaming clients do: indefinite lengths on the outer
    layers and the eContent as a constructed, chunked OCTET STRING."""
    sd = cms.ContentInfo.load(der)["content"]
    content = sd["encap_content_info"]["content"].native
    chunks = [_tlv(b"\x04", content[i : i + chunk]) for i in range(0, len(content), chunk)]
    encap = _indefinite(
        b"\x30", sd["encap_content_info"]["content_type"].dump(), _indefinite(b"\xa0", _indefinite(b"\x24", *chunks))
    )
    signed = _indefinite(
        b"\x30",
        sd["version"].dump(),
        sd["digest_algorithms"].dump(),
        encap,
        sd["certificates"].dump(),
        sd["signer_infos"].dump(),
    )
    return _indefinite(b"\x30", cms.ContentInfo.load(der)["content_type"].dump(), _indefinite(b"\xa0", signed))


async def test_ber_indefinite_request_parses(ra: Party, requester: Party, csr_der: bytes) -> None:
    der = request(ra, requester, csr_der, transaction_id="ber")
    ber = to_ber(der)
    assert ber != der and b"\x24\x80" in ber
    msg = parse_pki_message(ber)
    assert msg.transaction_id == "ber" and msg.envelope is not None
    assert await open_envelope(msg.envelope, ra.soft) == csr_der


def test_certs_only_keeps_order(ra: Party, ec_ra: Party) -> None:
    """DER would sort the SET; clients expect RA before CA, so the caller's order is kept."""
    for order in ([ra, ec_ra], [ec_ra, ra]):
        assert parse_certs_only(build_certs_only([p.der for p in order])) == [p.cert for p in order]
