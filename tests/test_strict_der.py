"""scepd.strict_der: what it refuses, and what it reads, against asn1crypto."""

from __future__ import annotations

import pytest
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from scepd import der
from scepd import strict_der as sd
from tests.scep.conftest import issue, name


@given(st.binary(max_size=64))
def test_reader_only_raises_not_strict_der(data: bytes) -> None:
    for reader in (lambda b: sd.children(b, 0, len(b)), lambda b: sd.whole(b, der.SEQUENCE)):
        try:
            reader(data)
        except sd.NotStrictDer:
            pass


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x81\x05" + b"\x00" * 5, "non-minimal length"),
        (b"\x30\x82\x00\x80" + b"\x00" * 128, "leading zero length"),
        (b"\x1f\x21\x00", "high tag"),
        (b"\x30\x05\x00", "overrun"),
        (b"\x30\x00\x00", "trailing"),
    ],
)
def test_reader_refuses_what_is_not_strict_der(encoded: bytes, why: str) -> None:
    with pytest.raises(sd.NotStrictDer):
        sd.whole(encoded, encoded[0])


def test_integer_and_oid_decoding() -> None:
    for n in (0, 1, 127, 128, 255, 256, -1, -128, -129, 2**64 + 5, -(2**70)):
        enc = core.Integer(n).dump()
        assert sd.integer(enc, 2, len(enc)) == n
    with pytest.raises(sd.NotStrictDer):
        sd.integer(b"\x00\x05", 0, 2)
    for dotted in ("1.2.840.113549.1.7.2", "2.16.840.1.101.3.4.2.1", "0.9.2342.19200300.100.1.1", "2.999.3"):
        assert sd.oid_text(core.ObjectIdentifier(dotted).contents) == dotted
    with pytest.raises(sd.NotStrictDer):
        sd.oid_text(b"\x2a\x80\x01")


def test_issuer_and_serial_are_the_certificate_s_own_bytes() -> None:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    for cert in (issue(ca_key, "a CA"), issue(key, "device", ca_key=ca_key, ca_name=name("a CA"))):
        der = cert.public_bytes(Encoding.DER)
        tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
        assert sd.issuer_and_serial(der) == (tbs["issuer"].dump(), tbs["serial_number"].dump())
        with pytest.raises(sd.NotStrictDer):
            sd.issuer_and_serial(der[:-1])
