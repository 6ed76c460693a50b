"""An in-memory key (cryptography) behind the Signer/Decrypter interface.

For unit tests of the SCEP codec and for test clients only: the daemon's keys
live on the token (scepd.keys.pkcs11).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scepd.keys import rejection
from scepd.keys.base import HashName, OaepParams, RsaPadding, UnsupportedParameters, Unwrapped

_HASHES: dict[HashName, type[hashes.HashAlgorithm]] = {
    HashName.SHA1: hashes.SHA1,
    HashName.SHA224: hashes.SHA224,
    HashName.SHA256: hashes.SHA256,
    HashName.SHA384: hashes.SHA384,
    HashName.SHA512: hashes.SHA512,
}


def hash_algorithm(name: HashName | str) -> hashes.HashAlgorithm:
    return _HASHES[HashName(name)]()


class SoftwareKey:
    """Signer and Decrypter over a cryptography RSA or EC private key."""

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, label: str = "software") -> None:
        if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise TypeError("SoftwareKey takes an RSA or EC private key")
        self._key = private_key
        self._label = label
        self._public = private_key.public_key()
        self._reject_secret = os.urandom(32)

    @property
    def label(self) -> str:
        return self._label

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._public

    @property
    def private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        return self._key

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        algorithm = hash_algorithm(hash)
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, apad.PKCS1v15(), algorithm)
        return self._key.sign(data, ec.ECDSA(algorithm))

    async def unwrap(self, ciphertext: bytes, padding: RsaPadding, oaep: OaepParams | None, key_size: int) -> Unwrapped:
        """Implicit rejection as on the token; the secret lives in this object only."""
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise UnsupportedParameters(f"key {self._label!r} is not an RSA key and cannot open envelopes")
        if RsaPadding(padding) is RsaPadding.OAEP:
            params = oaep or OaepParams()
            pad: apad.AsymmetricPadding = apad.OAEP(
                mgf=apad.MGF1(hash_algorithm(params.mgf_hash)),
                algorithm=hash_algorithm(params.hash),
                label=params.label or None,
            )
        else:
            pad = apad.PKCS1v15()
        substitute = rejection.software_substitute(self._reject_secret, ciphertext, key_size)
        try:
            plain, detail = self._key.decrypt(ciphertext, pad), "ok"
        except ValueError:
            plain, detail = b"", "does not decrypt"
        genuine = detail == "ok" and len(plain) == key_size
        if detail == "ok" and not genuine:
            detail = "content key length"
        return Unwrapped(rejection.select(genuine, plain, substitute), genuine, detail)

    def __repr__(self) -> str:
        return f"SoftwareKey(label={self._label!r})"
