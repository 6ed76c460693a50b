"""An in-memory key (cryptography) behind the Signer/Decrypter interface.

The one software key: for the codec's client half (scepd.scep.client, which
signs requests and opens replies with a client's own key), its unit tests
and test clients. The daemon's keys live on the token (scepd.keys.pkcs11).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scepd.keys import rejection
from scepd.keys.base import HashName, OaepParams, RsaPadding, UnsupportedParameters, Unwrapped, hash_algorithm


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

    def sign_now(self, data: bytes, hash: HashName) -> bytes:
        """`sign` for synchronous callers (the client half builds requests without an event loop):
        PKCS#1 v1.5 for RSA, ECDSA (DER) for EC."""
        algorithm = hash_algorithm(hash)
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, apad.PKCS1v15(), algorithm)
        return self._key.sign(data, ec.ECDSA(algorithm))

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        return self.sign_now(data, hash)

    async def sign_pss(self, data: bytes, hash: HashName) -> bytes:
        """RSASSA-PSS, MGF1 with the same hash and a salt as long as the digest (JWT PS256)."""
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise UnsupportedParameters(f"key {self._label!r} is not an RSA key and cannot sign RSA-PSS")
        algorithm = hash_algorithm(hash)
        return self._key.sign(data, apad.PSS(apad.MGF1(algorithm), salt_length=algorithm.digest_size), algorithm)

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
