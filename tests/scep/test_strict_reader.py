"""The strict DER fast path against the general (asn1crypto) parser.

`parse_pki_message` reads strict DER by offsets and falls back to asn1crypto
for anything else. Both feed the same checks, so for any input the outcome
must be the same whichever reader ran: the same PkiMessage, or the same
error type, failInfo and learned context. These tests run every message
through both and compare, on well-formed requests of each kind a client
sends and on hypothesis' mutations of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asn1crypto import cms, core
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scepd import der
from scepd import strict_der as sd
from scepd.keys.base import HashName, OaepParams, RsaPadding
from scepd.scep import ContentCipher, MalformedMessage, ScepError, parse_envelope, parse_pki_message, signed_view
from scepd.scep import envelope as envelope_module
from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import MessageType
from tests.scep.conftest import NOW, Party, mutate, name


@contextmanager
def general_only() -> Iterator[None]:
    """Force the asn1crypto readers, as for a BER message."""

    def refuse(data: bytes) -> Any:
        raise sd.NotStrictDer("forced")

    saved = signed_view._StrictSigned, envelope_module._strict_envelope
    signed_view._StrictSigned = refuse  # type: ignore[assignment,misc]
    envelope_module._strict_envelope = lambda data: None
    try:
        yield
    finally:
        signed_view._StrictSigned, envelope_module._strict_envelope = saved  # type: ignore[misc]


def outcome(body: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", parse_pki_message(body))
    except ScepError as e:
        return ("scep", e.fail_info, e.transaction_id, e.sender_nonce, e.signer_certificate, e.message_type)
    except MalformedMessage:
        return ("malformed",)


def both(body: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    fast = outcome(body)
    with general_only():
        general = outcome(body)
    return fast, general


def make(ra: Party, signer: Party, csr_der: bytes, **kw: Any) -> bytes:
    return build_pki_message(
        message_type=kw.pop("message_type", MessageType.PKCS_REQ),
        payload=csr_der,
        transaction_id=secrets.token_hex(8),
        sender_nonce=os.urandom(kw.pop("nonce_size", 16)),
        recipient_certificate=ra.cert,
        signer_certificate=signer.cert,
        signer_key=signer.key,
        **kw,
    )


@pytest.fixture(scope="module")
def ec_requester() -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    return Party(key, make_self_signed(key, name("ec-device"), NOW))


VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {
    "default": dict,
    "sha1": lambda: {"digest": HashName.SHA1},
    "sha512": lambda: {"digest": HashName.SHA512},
    "aes128": lambda: {"cipher": ContentCipher.AES128_CBC},
    "des3": lambda: {"cipher": ContentCipher.DES3_CBC},
    "des": lambda: {"cipher": ContentCipher.DES_CBC},
    "oaep": lambda: {"padding": RsaPadding.OAEP},
    "oaep-sha256": lambda: {
        "padding": RsaPadding.OAEP,
        "oaep": OaepParams(hash=HashName.SHA256, mgf_hash=HashName.SHA256),
    },
    "8-byte-nonce": lambda: {"nonce_size": 8},
    "no-content-type": lambda: {"omit_content_type_attr": True},
    "renewal": lambda: {"message_type": MessageType.RENEWAL_REQ},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_well_formed_requests_read_the_same_both_ways(
    ra: Party, requester: Party, csr_der: bytes, variant: str
) -> None:
    body = make(ra, requester, csr_der, **VARIANTS[variant]())
    assert isinstance(signed_view.read_signed(body), signed_view._StrictSigned)
    fast, general = both(body)
    assert fast == general
    if variant != "no-content-type":
        assert fast[0] == "ok"


def test_ecdsa_signed_request_reads_the_same(ra: Party, ec_requester: Party, csr_der: bytes) -> None:
    fast, general = both(make(ra, ec_requester, csr_der))
    assert fast == general and fast[0] == "ok"


def test_default_oaep_envelope_is_read_by_offsets(ra: Party, requester: Party, csr_der: bytes) -> None:
    body = make(ra, requester, csr_der, padding=RsaPadding.OAEP)
    content = cms.ContentInfo.load(body)["content"]["encap_content_info"]["content"].native
    fast = envelope_module._strict_envelope(content)
    assert fast is not None and fast.padding is RsaPadding.OAEP
    with general_only():
        assert parse_envelope(content) == fast


def _resigned_signer_info(body: bytes, change: Callable[[cms.SignerInfo], None]) -> bytes:
    info = cms.ContentInfo.load(body)
    signer_info = info["content"]["signer_infos"][0]
    change(signer_info)
    return info.dump(force=True)


def test_subject_key_identifier_signer_is_found(ra: Party, requester: Party, csr_der: bytes) -> None:
    """The SignerIdentifier is not signed, so it can be swapped for the key identifier form."""
    spki = requester.cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ski = hashlib.sha1(core.load(spki)[1].contents[1:]).digest()

    def to_ski(si: cms.SignerInfo) -> None:
        si["sid"] = cms.SignerIdentifier({"subject_key_identifier": ski})

    body = _resigned_signer_info(make(ra, requester, csr_der), to_ski)
    assert isinstance(signed_view.read_signed(body), signed_view._StrictSigned)
    fast, general = both(body)
    assert fast == general and fast[0] == "ok"


def test_unsorted_signed_attributes_verify_through_the_canonical_form(
    ra: Party, requester: Party, csr_der: bytes
) -> None:
    """A client that signed the DER (sorted) SET but sent its attributes in another order."""
    body = make(ra, requester, csr_der)
    info = cms.ContentInfo.load(body)
    attrs = info["content"]["signer_infos"][0]["signed_attrs"]
    raw = [a.dump() for a in attrs]
    assert raw == sorted(raw)
    original = attrs.dump()
    reordered = original[: len(original) - len(b"".join(raw))] + b"".join(reversed(raw))
    assert len(reordered) == len(original)
    tampered = body.replace(original, reordered)
    assert isinstance(signed_view.read_signed(tampered), signed_view._StrictSigned)
    fast, general = both(tampered)
    assert fast == general and fast[0] == "ok"


def test_ber_request_takes_the_general_reader(ra: Party, requester: Party, csr_der: bytes) -> None:
    """Indefinite lengths (what `openssl cms -stream` writes) are not strict DER."""
    body = make(ra, requester, csr_der)
    start, end = sd.whole(body, der.SEQUENCE)
    ber = b"\x30\x80" + body[start:end] + b"\x00\x00"
    assert isinstance(signed_view.read_signed(ber), signed_view._Asn1Signed)
    fast, general = both(ber)
    assert fast == general and fast[0] == "ok"
    assert dataclasses.replace(fast[1], raw=body) == parse_pki_message(body)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_get_the_same_outcome_both_ways(
    ra: Party, requester: Party, csr_der: bytes, data: st.DataObject
) -> None:
    body = mutate(data, _base_request(ra, requester, csr_der))
    fast, general = both(body)
    assert fast == general


_BASE: dict[str, bytes] = {}


def _base_request(ra: Party, requester: Party, csr_der: bytes) -> bytes:
    if "body" not in _BASE:
        _BASE["body"] = make(ra, requester, csr_der)
    return _BASE["body"]


def envelope_outcome(content: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", parse_envelope(content))
    except ScepError as e:
        return ("scep", e.fail_info)


_ENVELOPES = ["default", "oaep", "des3", "aes128"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_envelopes_get_the_same_outcome_both_ways(
    ra: Party, requester: Party, csr_der: bytes, data: st.DataObject
) -> None:
    """The request's signature covers its envelope, so mutations of a whole request stop
    before the envelope is read; here the envelope is mutated alone."""
    variant = data.draw(st.sampled_from(_ENVELOPES))
    key = f"envelope-{variant}"
    if key not in _BASE:
        body = make(ra, requester, csr_der, **VARIANTS[variant]())
        _BASE[key] = cms.ContentInfo.load(body)["content"]["encap_content_info"]["content"].native
    content = mutate(data, _BASE[key], most=2, longest_cut=20)
    fast = envelope_outcome(content)
    with general_only():
        assert envelope_outcome(content) == fast
