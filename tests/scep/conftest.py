"""In-memory keys and certificates for the codec tests.

`Party.soft` is the one software Signer/Decrypter (scepd.keys.software) over
the party's in-memory key: the codec tests never need the token.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from scepd.keys.software import SoftwareKey
from scepd.scep import CertRepDraft, ContentCipher, build_cert_rep, open_envelope, parse_pki_message, sign_cert_rep
from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import MessageType, PkiStatus

NOW = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cn: str,
    ca_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    ca_name: x509.Name | None = None,
) -> x509.Certificate:
    ca_key = ca_key or key
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_name or name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )


@dataclass
class Party:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def soft(self) -> SoftwareKey:
        return SoftwareKey(self.key, "test")

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="session")
def ra() -> Party:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Party(key, issue(key, "Test RA"))


@pytest.fixture(scope="session")
def ec_ra() -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    return Party(key, issue(key, "Test EC RA"))


@pytest.fixture(scope="session")
def requester() -> Party:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Party(key, make_self_signed(key, name("device-1"), NOW))


@pytest.fixture(scope="session")
def csr_der(requester: Party) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(name("device-1")).sign(requester.key, hashes.SHA256())
    return csr.public_bytes(Encoding.DER)


@pytest.fixture(scope="session")
def request_der(ra: Party, requester: Party, csr_der: bytes) -> bytes:
    return request(ra, requester, csr_der)


def request(ra: Party, requester: Party, payload: bytes, **kw: object) -> bytes:
    args: dict[str, object] = dict(
        message_type=MessageType.PKCS_REQ,
        payload=payload,
        transaction_id=secrets.token_hex(16),
        sender_nonce=os.urandom(16),
        recipient_certificate=ra.cert,
        signer_certificate=requester.cert,
        signer_key=requester.key,
    )
    args.update(kw)
    return build_pki_message(**args)  # type: ignore[arg-type]


async def serve(
    ra: Party, body: bytes, *, issued: list[bytes] | None = None, status: PkiStatus = PkiStatus.SUCCESS, **kw: object
) -> tuple[bytes, bytes]:
    """A toy server: parse, open, answer. Returns (opened payload, CertRep)."""
    msg = parse_pki_message(body)
    assert msg.envelope is not None
    payload = await open_envelope(msg.envelope, ra.soft)
    draft: CertRepDraft = build_cert_rep(
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.sender_nonce,
        sender_nonce=os.urandom(16),
        status=status,
        certificates=issued or [],
        recipient_certificate=msg.signer_certificate if status is PkiStatus.SUCCESS else None,
        cipher=msg.envelope.cipher,
        recipient_padding=msg.envelope.padding,
        recipient_oaep=msg.envelope.oaep,
        signer_certificate=ra.cert,
        digest=msg.digest,
        **kw,  # type: ignore[arg-type]
    )
    return payload, await sign_cert_rep(draft, ra.soft)


__all__ = ["ContentCipher", "NOW", "Party", "issue", "name", "request", "serve"]


def mutate(data: st.DataObject, original: bytes, *, most: int = 3, longest_cut: int = 40) -> bytes:
    """Up to `most` random edits (bit flip, byte set, cut, insert) drawn by hypothesis."""
    body = bytearray(original)
    for _ in range(data.draw(st.integers(1, most))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if kind == "flip" and body:
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and body:
            body[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del body[at : at + data.draw(st.integers(1, longest_cut))]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(body)
