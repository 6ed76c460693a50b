"""A few DER encoders for the structures scepd writes on every enrollment.

asn1crypto builds a structure from Python values and encodes it field by
field; that is exact and general, but slow: building the CertRep, its
envelope and the TBSCertificate with it was the largest part of the
daemon's CPU per enrollment (figures in docs/benchmarks.md). What scepd *writes*
on the hot path is a handful of fixed shapes whose parts are already DER
(names, keys and extensions from `cryptography`, certificates as stored),
so concatenating tag-length-value triples is enough. Parsing stays with
asn1crypto and `cryptography`; everything built here is read back by them,
and by OpenSSL and the SCEP clients, in the tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import lru_cache
from typing import cast

from asn1crypto import core

# Tags (X.690): the one table, for this writer and for the strict reader (scepd.strict_der).
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL_TAG = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31
CONTEXT_0 = 0xA0  # [0], constructed: EXPLICIT, or IMPLICIT over a SEQUENCE/SET
CONTEXT_1 = 0xA1
CONTEXT_0_PRIMITIVE = 0x80  # [0] IMPLICIT over a primitive type (an OCTET STRING, a key identifier)
NULL = bytes([NULL_TAG, 0])  # the whole encoding of NULL


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def sequence(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def set_of(parts: Iterable[bytes], *, sort: bool = True) -> bytes:
    """SET OF; DER sorts the encodings (X.690 11.6). `sort=False` keeps the caller's
    order where readers depend on it (certificate bags, as OpenSSL writes them)."""
    items = list(parts)
    return tlv(SET, b"".join(sorted(items) if sort else items))


def context(number: int, content: bytes) -> bytes:
    """A constructed [number] tag around `content`: [number] EXPLICIT around an encoded value, and
    also [number] IMPLICIT over a SET OF or SEQUENCE (whose own tag it replaces); the bytes are the same."""
    return tlv(CONTEXT_0 | number, content)


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are written here")
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    return tlv(BIT_STRING, b"\x00" + value)


def printable_string(value: str) -> bytes:
    """PrintableString, encoded as Latin-1 without a character-set check (as asn1crypto reads and
    writes it), so a value a client sent goes back exactly as it came: a transactionID, say."""
    return tlv(PRINTABLE_STRING, value.encode("latin-1"))


def utf8_string(value: str) -> bytes:
    return tlv(UTF8_STRING, value.encode("utf-8"))


@lru_cache(maxsize=256)
def oid(dotted: str) -> bytes:
    """The encoded OBJECT IDENTIFIER (tag, length, content) of a dotted OID from scepd.oids."""
    return cast(bytes, core.ObjectIdentifier(dotted).dump())


def algorithm(dotted: str, parameters: bytes | None = NULL) -> bytes:
    """AlgorithmIdentifier; `parameters=None` leaves them out (ECDSA, RFC 5758)."""
    return sequence(oid(dotted), parameters or b"")


def x509_time(when: dt.datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on; whole seconds, Z."""
    when = when.astimezone(dt.UTC)
    if when.year < 2050:
        return tlv(UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(GENERALIZED_TIME, when.strftime("%Y%m%d%H%M%SZ").encode("ascii"))
