from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from scepd.keys import rejection
from scepd.keys.base import Decrypter, HashName, OaepParams, RsaPadding, Signer, UnsupportedParameters
from scepd.keys.software import SoftwareKey

RSA = rsa.generate_private_key(65537, 2048)


async def test_rsa_sign_and_unwrap() -> None:
    key = SoftwareKey(RSA, "ca")
    assert isinstance(key, Signer) and isinstance(key, Decrypter)
    sig = await key.sign(b"data", HashName.SHA256)
    RSA.public_key().verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())
    ct = RSA.public_key().encrypt(b"k" * 16, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    got = await key.unwrap(ct, RsaPadding.OAEP, OaepParams(HashName.SHA256, HashName.SHA256), 16)
    assert (got.key, got.genuine) == (b"k" * 16, True)
    ct = RSA.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
    assert (await key.unwrap(ct, RsaPadding.PKCS1V15, None, 16)).key == b"k" * 16
    bad = await key.unwrap(b"\x01" * 256, RsaPadding.OAEP, None, 16)
    assert (
        not bad.genuine
        and len(bad.key) == 16
        and bad.key == (await key.unwrap(b"\x01" * 256, RsaPadding.OAEP, None, 16)).key
    )
    short = await key.unwrap(ct, RsaPadding.PKCS1V15, None, 24)  # a 16-byte key where 24 are due
    assert not short.genuine and short.detail == "content key length" and len(short.key) == 24


async def test_ec_sign_and_no_unwrap() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    sig = await SoftwareKey(priv, "ec").sign(b"data", HashName.SHA384)
    priv.public_key().verify(sig, b"data", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(UnsupportedParameters):
        await SoftwareKey(priv, "ec").unwrap(b"x", RsaPadding.PKCS1V15, None, 16)


@given(st.booleans(), st.binary(max_size=40), st.binary(min_size=1, max_size=32))
def test_select(use: bool, genuine: bytes, substitute: bytes) -> None:
    n = len(substitute)
    expected = genuine[:n].ljust(n, b"\0") if use else substitute
    assert rejection.select(use, genuine, substitute) == expected


@given(st.binary(min_size=0, max_size=60), st.sampled_from(["sha1", "sha256"]), st.binary(max_size=8))
def test_oaep_decode_matches_cryptography(message: bytes, hash: str, label: bytes) -> None:
    """The constant-flow decoder agrees with cryptography's on good blocks and refuses mangled ones."""
    h = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[hash]
    pub = RSA.public_key()
    ct = pub.encrypt(message, padding.OAEP(padding.MGF1(h), h, label or None))
    # The raw RSA decryption, by the Chinese remainder theorem: a quarter of the time of pow(c, d, n).
    c, k = int.from_bytes(ct, "big"), RSA.private_numbers()
    m1, m2 = pow(c, k.dmp1, k.p), pow(c, k.dmq1, k.q)
    em = (m2 + (k.iqmp * (m1 - m2) % k.p) * k.q).to_bytes(256, "big")
    assert rejection.oaep_decode(em, hash, hash, label) == (True, message)
    assert rejection.oaep_decode(em, hash, hash, label + b"x")[0] is False
    assert rejection.oaep_decode(b"\x01" + em[1:], hash, hash, label)[0] is False
    assert rejection.oaep_decode(em[:1] + os.urandom(255), hash, hash, label)[0] is False


def test_substitute_key_lengths() -> None:
    mac = bytes(range(32))
    assert [len(rejection.substitute_key(mac, n)) for n in (8, 16, 24, 32, 48)] == [8, 16, 24, 32, 48]
    assert rejection.substitute_key(mac, 48)[:32] == mac


async def test_pss_and_the_synchronous_sign() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = SoftwareKey(private)
    pss = await key.sign_pss(b"assertion", HashName.SHA256)
    private.public_key().verify(
        pss, b"assertion", padding.PSS(padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )
    v15 = key.sign_now(b"request", HashName.SHA384)
    assert v15 == await key.sign(b"request", HashName.SHA384)  # PKCS#1 v1.5 is deterministic
    private.public_key().verify(v15, b"request", padding.PKCS1v15(), hashes.SHA384())
    with pytest.raises(UnsupportedParameters):
        await SoftwareKey(ec.generate_private_key(ec.SECP256R1())).sign_pss(b"x", HashName.SHA256)
