"""What the parser refuses, and that it refuses with the right error type."""

from __future__ import annotations

import os

import pytest
from asn1crypto import cms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scepd import der, oids
from scepd.keys.base import HashName
from scepd.keys.software import SoftwareKey
from scepd.scep import MalformedMessage, ScepError, parse_certs_only, parse_issuer_and_serial, parse_pki_message
from scepd.scep.constants import FailInfo, MessageType
from tests.scep.conftest import Party, mutate, request


def _flip_in(body: bytes, needle: bytes, offset: int = 0) -> bytes:
    at = body.index(needle) + offset
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


def test_tampered_signature_is_bad_message_check(request_der: bytes) -> None:
    sig = cms.ContentInfo.load(request_der)["content"]["signer_infos"][0]["signature"].native
    with pytest.raises(ScepError) as e:
        parse_pki_message(_flip_in(request_der, sig, 10))
    assert e.value.fail_info is FailInfo.BAD_MESSAGE_CHECK
    # What was learned still lets the server answer.
    assert e.value.transaction_id and e.value.sender_nonce and e.value.signer_certificate is not None
    assert e.value.message_type is MessageType.PKCS_REQ


def test_tampered_content_is_bad_message_check(request_der: bytes) -> None:
    content = cms.ContentInfo.load(request_der)["content"]["encap_content_info"]["content"].native
    enc = cms.ContentInfo.load(content)["content"]["encrypted_content_info"]["encrypted_content"].native
    with pytest.raises(ScepError) as e:
        parse_pki_message(_flip_in(request_der, enc, 5))
    assert e.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_disallowed_digest_is_bad_alg(ra: Party, requester: Party, csr_der: bytes) -> None:
    body = request(ra, requester, csr_der, digest=HashName.SHA1)
    with pytest.raises(ScepError) as e:
        parse_pki_message(body, allowed_hashes=frozenset({HashName.SHA256}))
    assert e.value.fail_info is FailInfo.BAD_ALG and e.value.sender_nonce is not None
    assert parse_pki_message(body).digest is HashName.SHA1


def test_missing_content_type_attribute_is_bad_message_check(ra: Party, requester: Party, csr_der: bytes) -> None:
    body = request(ra, requester, csr_der, omit_content_type_attr=True)
    with pytest.raises(ScepError) as e:
        parse_pki_message(body)
    assert e.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def _resigned_without(ra: Party, requester: Party, csr_der: bytes, oid: str) -> bytes:
    """A correctly signed request with one SCEP attribute removed."""
    from scepd.scep import signed as s

    body = request(ra, requester, csr_der)
    sd = cms.ContentInfo.load(body)["content"]
    si = sd["signer_infos"][0]
    attrs = [a for a in si["signed_attrs"] if a["type"].dotted != oid]
    draft = s.draft_signed_data(
        content=sd["encap_content_info"]["content"].native,
        attributes=[a.dump() for a in attrs if a["type"].dotted not in (oids.CONTENT_TYPE, oids.MESSAGE_DIGEST)],
        signer_certificate=requester.cert,
        digest_name=HashName.SHA256,
        certificates=(),
    )

    return draft.finish(SoftwareKey(requester.key).sign_now(draft.to_be_signed, HashName.SHA256))


@pytest.mark.parametrize(
    "oid,what",
    [
        (oids.SCEP_TRANSACTION_ID, "transaction_id"),
        (oids.SCEP_SENDER_NONCE, "sender_nonce"),
        (oids.SCEP_MESSAGE_TYPE, "message_type"),
    ],
)
def test_missing_scep_attribute_is_bad_request(
    ra: Party, requester: Party, csr_der: bytes, oid: str, what: str
) -> None:
    with pytest.raises(ScepError) as e:
        parse_pki_message(_resigned_without(ra, requester, csr_der, oid))
    assert e.value.fail_info is FailInfo.BAD_REQUEST
    assert getattr(e.value, what) is None and e.value.signer_certificate is not None


def test_unknown_message_type_is_bad_request_with_context(ra: Party, requester: Party, csr_der: bytes) -> None:

    from scepd.scep import signed as s
    from scepd.scep.envelope import build_envelope

    draft = s.draft_signed_data(
        content=build_envelope(csr_der, ra.cert),
        attributes=[
            s.attribute_der(oids.SCEP_MESSAGE_TYPE, der.printable_string("99")),
            s.attribute_der(oids.SCEP_TRANSACTION_ID, der.printable_string("tid-x")),
            s.attribute_der(oids.SCEP_SENDER_NONCE, der.octet_string(b"n" * 16)),
        ],
        signer_certificate=requester.cert,
        digest_name=HashName.SHA256,
        certificates=(),
    )
    body = draft.finish(SoftwareKey(requester.key).sign_now(draft.to_be_signed, HashName.SHA256))
    with pytest.raises(ScepError) as e:
        parse_pki_message(body)
    assert e.value.fail_info is FailInfo.BAD_REQUEST and "99" in e.value.reason
    assert e.value.transaction_id == "tid-x" and e.value.sender_nonce == b"n" * 16 and e.value.message_type is None


def test_signer_certificate_absent_is_not_answerable(ra: Party, requester: Party, csr_der: bytes) -> None:
    body = request(ra, requester, csr_der)
    ci = cms.ContentInfo.load(body)
    ci["content"]["certificates"] = []
    with pytest.raises(ScepError) as e:
        parse_pki_message(ci.dump(force=True))
    assert e.value.signer_certificate is None and e.value.fail_info is FailInfo.BAD_CERT_ID


def test_unsupported_cipher_is_bad_alg(ra: Party, requester: Party, csr_der: bytes) -> None:

    from scepd.scep import signed as s
    from scepd.scep.envelope import build_envelope

    env = cms.ContentInfo.load(build_envelope(csr_der, ra.cert))
    env["content"]["encrypted_content_info"]["content_encryption_algorithm"] = {
        "algorithm": "aes256_ofb",
        "parameters": b"\0" * 16,
    }
    draft = s.draft_signed_data(
        content=env.dump(force=True),
        attributes=[
            s.attribute_der(oids.SCEP_MESSAGE_TYPE, der.printable_string("19")),
            s.attribute_der(oids.SCEP_TRANSACTION_ID, der.printable_string("t")),
            s.attribute_der(oids.SCEP_SENDER_NONCE, der.octet_string(b"n" * 16)),
        ],
        signer_certificate=requester.cert,
        digest_name=HashName.SHA256,
        certificates=(),
    )
    body = draft.finish(SoftwareKey(requester.key).sign_now(draft.to_be_signed, HashName.SHA256))
    with pytest.raises(ScepError) as e:
        parse_pki_message(body)
    assert e.value.fail_info is FailInfo.BAD_ALG and e.value.transaction_id == "t"


async def test_wrong_cek_is_bad_message_check(request_der: bytes) -> None:
    env = parse_pki_message(request_der).envelope
    assert env is not None
    with pytest.raises(ScepError) as e:
        env.open(os.urandom(env.cipher.key_size))
    assert e.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x80", b"\x30\x03\x06\x01\x00", os.urandom(300)])
def test_garbage_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_pki_message(body)


def test_truncated_and_non_signed_data_are_malformed(request_der: bytes, ra: Party) -> None:
    for cut in (1, 10, len(request_der) // 2, len(request_der) - 1):
        with pytest.raises(MalformedMessage):
            parse_pki_message(request_der[:cut])
    from scepd.scep.envelope import build_envelope

    with pytest.raises(MalformedMessage):
        parse_pki_message(build_envelope(b"x", ra.cert))  # an EnvelopedData, not SignedData


def test_certs_only_garbage_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        parse_certs_only(b"\x30\x05nope!")


def test_bad_payloads_are_bad_request() -> None:
    with pytest.raises(ScepError) as e:
        parse_issuer_and_serial(b"\x30\x00")
    assert e.value.fail_info is FailInfo.BAD_REQUEST


def _only_codec_errors(body: bytes) -> None:
    try:
        parse_pki_message(body)
    except (ScepError, MalformedMessage):
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_codec_errors(data: bytes) -> None:
    with pytest.raises((ScepError, MalformedMessage)):
        parse_pki_message(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutations_only_raise_codec_errors(request_der: bytes, data: st.DataObject) -> None:
    body = mutate(data, request_der, most=4, longest_cut=8)
    try:
        msg = parse_pki_message(body)
    except (ScepError, MalformedMessage) as e:
        assert str(e)
    else:
        # A mutation that still parses must have left the signed parts intact.
        assert msg.sender_nonce and msg.transaction_id
