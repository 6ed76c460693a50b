"""Shared by the fuzz tests (tests/scep/test_fuzz_readers.py, tests/e2e/test_fuzz_http.py) and the
long runner (bench/fuzz.py): real SCEP messages as seeds, one mutator, one oracle per reader.

A mutation is a list of (op, position, value) integers, so Hypothesis can draw and shrink it and a
seeded `random.Random` can draw millions of them; both go through `mutate`. Each reader's oracle
runs it on one input and returns the outcome's name, or raises `Unexpected` for anything a client
could turn into a 500: an exception type the reader does not promise.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scepd.keys.base import OaepParams, RsaPadding
from scepd.scep import (
    ContentCipher,
    MalformedMessage,
    ScepError,
    build_envelope,
    parse_envelope,
    parse_issuer_and_serial,
    parse_issuer_and_subject,
    parse_pki_message,
)
from scepd.scep.client import build_pki_message, issuer_and_serial, issuer_and_subject, make_self_signed
from scepd.scep.constants import MessageType

Op = tuple[int, int, int]
N_OPS = 9
INTERESTING = (
    0x00,
    0x01,
    0x02,
    0x04,
    0x05,
    0x06,
    0x0C,
    0x13,
    0x1F,
    0x30,
    0x31,
    0x7F,
    0x80,
    0x81,
    0x82,
    0x83,
    0x84,
    0x88,
    0xA0,
    0xA1,
    0xFF,
)


class Unexpected(Exception):
    """A reader raised what it does not promise: a bug the daemon would answer with a 500."""


def mutate(seed: bytes, ops: list[Op], donor: bytes = b"") -> bytes:
    """Apply `ops` to `seed` in order; positions and values wrap, so any integers are a valid mutation."""
    data = bytearray(seed)
    for op, pos, value in ops:
        kind = op % N_OPS
        n = len(data)
        at = pos % (n + 1)
        if kind == 0 and n:  # flip one bit
            data[at % n] ^= 1 << (value % 8)
        elif kind == 1 and n:  # an ASN.1-ish interesting byte (tags, length forms)
            data[at % n] = INTERESTING[value % len(INTERESTING)]
        elif kind == 2 and n:  # any byte
            data[at % n] = value % 256
        elif kind == 3:  # truncate
            del data[at:]
        elif kind == 4:  # delete a slice
            del data[at : at + 1 + value % 64]
        elif kind == 5:  # duplicate a slice in place
            data[at:at] = data[at : at + 1 + value % 256]
        elif kind == 6 and donor:  # splice in a slice of another message
            start = value % len(donor)
            data[at:at] = donor[start : start + 1 + (pos >> 8) % 512]
        elif kind == 7:  # insert random-ish bytes
            data[at:at] = random.Random(value).randbytes(1 + value % 32)
        elif kind == 8 and n:  # a long-form length: 0x84 and four bytes (huge lengths, overflows)
            data[at % n : at % n + 1] = bytes([0x84]) + (value * 2654435761 % (1 << 32)).to_bytes(4, "big")
    return bytes(data)


def random_ops(rng: random.Random, most: int = 4) -> list[Op]:
    return [(rng.randrange(N_OPS), rng.randrange(1 << 16), rng.randrange(1 << 16)) for _ in range(rng.randint(1, most))]


@dataclass(frozen=True)
class Seeds:
    """Well-formed inputs for each reader, made once (RSA keys are slow)."""

    messages: tuple[bytes, ...]  # PKIOperation bodies
    envelopes: tuple[bytes, ...]  # ContentInfo(EnvelopedData)
    csrs: tuple[bytes, ...]
    issuer_and_subject: bytes
    issuer_and_serial: bytes


def make_seeds(recipient: x509.Certificate | None = None, challenge: str = "fuzz-challenge") -> Seeds:
    """Requests as real clients send them; addressed to `recipient` (a daemon's CA or RA) if given."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    if recipient is None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        recipient = make_self_signed(ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")]), now)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "fuzz device"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scepd")]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("fuzz.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    signer = make_self_signed(key, subject, now)
    poll = issuer_and_subject(recipient.subject, subject)
    get_cert = issuer_and_serial(recipient.subject, 0x1234567890ABCDEF)

    def message(kind: MessageType, payload: bytes, **kw: object) -> bytes:
        return build_pki_message(
            message_type=kind,
            payload=payload,
            transaction_id=os.urandom(8).hex(),
            sender_nonce=os.urandom(16),
            recipient_certificate=recipient,
            signer_certificate=signer,
            signer_key=key,
            **kw,
        )  # type: ignore[arg-type]

    messages = (
        message(MessageType.PKCS_REQ, csr_der),
        message(MessageType.PKCS_REQ, csr_der, cipher=ContentCipher.DES3_CBC),
        message(MessageType.PKCS_REQ, csr_der, padding=RsaPadding.OAEP, oaep=OaepParams()),
        message(MessageType.CERT_POLL, poll),
        message(MessageType.GET_CERT, get_cert),
    )
    envelopes = (
        build_envelope(csr_der, recipient),
        build_envelope(
            csr_der, recipient, cipher=ContentCipher.AES128_CBC, rsa_padding=RsaPadding.OAEP, oaep=OaepParams()
        ),
    )
    return Seeds(messages, envelopes, (csr_der,), poll, get_cert)


def read_message(data: bytes) -> str:
    try:
        msg = parse_pki_message(data)
    except ScepError as e:
        return f"ScepError:{e.fail_info.name}"
    except MalformedMessage:
        return "MalformedMessage"
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"parse_pki_message: {type(e).__name__}: {e}") from e
    # What the service reads next from a parsed message, before any key is used.
    _ = (
        msg.transaction_id,
        msg.message_type,
        msg.signer_certificate.subject.rfc4514_string(),
        msg.envelope.cipher if msg.envelope is not None else None,
    )
    return "ok"


def read_envelope(data: bytes) -> str:
    try:
        env = parse_envelope(data)
    except ScepError as e:
        return f"ScepError:{e.fail_info.name}"
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"parse_envelope: {type(e).__name__}: {e}") from e
    _ = (env.cipher, env.padding)
    return "ok"


def read_csr(data: bytes) -> str:
    """What ScepService does with a decrypted payload before the chain: load, verify, name the subject."""
    try:
        csr = x509.load_der_x509_csr(data)
    except ValueError:
        return "ValueError"
    except x509.InvalidVersion:
        # scepd.scep.csr.read_csr reads these itself (a macOS quirk) and verifies the signature as sent.
        from scepd.scep import read_csr as scepd_read_csr

        read = scepd_read_csr(data)
        return "nonzero version" if read is not None else "ValueError"
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"load_der_x509_csr: {type(e).__name__}: {e}") from e
    try:
        valid = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - the service treats these as "does not verify"
        valid = False
    if not valid:
        return "bad_signature"
    try:
        csr.subject.rfc4514_string()
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"CSR subject: {type(e).__name__}: {e}") from e
    return "ok"


def read_issuer_and(data: bytes) -> str:
    outcomes = []
    for name, reader in (("subject", parse_issuer_and_subject), ("serial", parse_issuer_and_serial)):
        try:
            reader(data)
            outcomes.append("ok")
        except ScepError:
            outcomes.append("ScepError")
        except Exception as e:  # noqa: BLE001
            raise Unexpected(f"parse_issuer_and_{name}: {type(e).__name__}: {e}") from e
    return "/".join(outcomes)


Reader = Callable[[bytes], str]
READERS: dict[str, Reader] = {
    "message": read_message,
    "envelope": read_envelope,
    "csr": read_csr,
    "issuer_and": read_issuer_and,
}


def seeds_for(seeds: Seeds, reader: str) -> tuple[bytes, ...]:
    return {
        "message": seeds.messages,
        "envelope": seeds.envelopes,
        "csr": seeds.csrs,
        "issuer_and": (seeds.issuer_and_subject, seeds.issuer_and_serial),
    }[reader]
