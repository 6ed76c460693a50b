from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scepd.keys.base import DecryptionError, Decrypter, HashName, OaepParams, RsaPadding, Signer
from scepd.keys.software import SoftwareKey

RSA = rsa.generate_private_key(65537, 2048)


async def test_rsa_sign_and_decrypt() -> None:
    key = SoftwareKey(RSA, "ca")
    assert isinstance(key, Signer) and isinstance(key, Decrypter)
    sig = await key.sign(b"data", HashName.SHA256)
    RSA.public_key().verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())
    ct = RSA.public_key().encrypt(b"k" * 16, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    assert await key.decrypt(ct, RsaPadding.OAEP, OaepParams(HashName.SHA256, HashName.SHA256)) == b"k" * 16
    ct = RSA.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
    assert await key.decrypt(ct, RsaPadding.PKCS1V15) == b"k" * 16
    with pytest.raises(DecryptionError):
        await key.decrypt(b"\x01" * 256, RsaPadding.OAEP)


async def test_ec_sign() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    sig = await SoftwareKey(priv, "ec").sign(b"data", HashName.SHA384)
    priv.public_key().verify(sig, b"data", ec.ECDSA(hashes.SHA384()))
