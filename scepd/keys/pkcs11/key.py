"""`Pkcs11Key`: one private key on the token, signing and decrypting through a TokenPool.

The key only needs the pool's `call`, so it names that (`TokenCalls`) rather than
importing the pool, which builds keys: the dependency runs one way, pool -> key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from scepd.keys.base import (
    HashName,
    KeyBackendError,
    OaepParams,
    RsaPadding,
    UnsupportedParameters,
    Unwrapped,
)
from scepd.metrics import KEY_OPERATION_SECONDS


class TokenCalls(Protocol):
    """What a key asks of its pool: run one token operation on an idle worker."""

    async def call(self, op: str, *args: Any, on_start: Callable[[], None] | None = None) -> tuple[str, Any]: ...


# RSA: the token hashes and pads (CKM_SHA*_RSA_PKCS): correct by construction, and no
# slower than hashing here + CKM_RSA_PKCS over a DigestInfo (docs/benchmarks.md).
_RSA_MECH = {
    HashName.SHA1: "SHA1_RSA_PKCS",
    HashName.SHA224: "SHA224_RSA_PKCS",
    HashName.SHA256: "SHA256_RSA_PKCS",
    HashName.SHA384: "SHA384_RSA_PKCS",
    HashName.SHA512: "SHA512_RSA_PKCS",
}


class Pkcs11Key:
    """A Signer and (RSA) Decrypter whose private half never leaves the token."""

    def __init__(
        self,
        pool: TokenCalls,
        label: str,
        kind: str,
        public_key: PublicKeyTypes,
        *,
        can_sign: bool = True,
        can_decrypt: bool = False,
    ) -> None:
        self._pool, self._label, self.kind, self._public = pool, label, kind, public_key
        # CKA_SIGN / CKA_DECRYPT as the token reported them when the pool opened.
        self.can_sign, self.can_decrypt = can_sign, can_decrypt

    @property
    def label(self) -> str:
        return self._label

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._public

    async def _run(self, operation: str, mechanism: str, op: str, *args: Any) -> tuple[str, Any]:
        started = 0.0

        def on_start() -> None:
            nonlocal started
            started = time.perf_counter()

        result = "error"
        try:
            reply = await self._pool.call(op, *args, on_start=on_start)
            result = {"ok": "ok", "unsupported": "unsupported"}.get(reply[0], "error")
            if operation == "unwrap" and result == "ok" and reply[1][1] != "ok":
                # Implicit rejection: the token worked, the block was not for this key (a
                # client's mistake, or a probe), which an operator must not read as a token fault.
                result = "rejected"
            return reply
        finally:
            if started:
                KEY_OPERATION_SECONDS.labels(self._label, operation, mechanism, result).observe(
                    time.perf_counter() - started
                )

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        hash = HashName(hash)
        if self.kind == "rsa":
            mechanism = _RSA_MECH[hash]
            status, value = await self._run("sign", mechanism, "sign", self._label, mechanism, bytes(data))
        else:
            mechanism = f"ECDSA_{hash.name}"
            digest = hashlib.new(hash.value, data).digest()
            status, value = await self._run("sign", mechanism, "sign", self._label, "ECDSA", digest)
        if status != "ok":
            raise KeyBackendError(f"sign with {self._label!r} ({mechanism}) failed: {value}")
        if self.kind == "ec":
            half = len(value) // 2
            return encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
        return value  # type: ignore[no-any-return]

    async def sign_pss(self, data: bytes, hash: HashName) -> bytes:
        """RSASSA-PSS with MGF1 of the same hash and a salt as long as the digest (what JOSE's
        PS256/384/512 mean). Raises `UnsupportedParameters` for an EC key or a token without PSS."""
        hash = HashName(hash)
        if self.kind != "rsa":
            raise UnsupportedParameters(f"key {self._label!r} is not an RSA key and cannot sign RSA-PSS")
        mechanism = f"{hash.name}_RSA_PKCS_PSS"
        status, value = await self._run("sign", mechanism, "sign_pss", self._label, hash.value, bytes(data))
        if status == "unsupported":
            raise UnsupportedParameters(value)
        if status != "ok":
            raise KeyBackendError(f"sign with {self._label!r} ({mechanism}) failed: {value}")
        return value  # type: ignore[no-any-return]

    async def unwrap(self, ciphertext: bytes, padding: RsaPadding, oaep: OaepParams | None, key_size: int) -> Unwrapped:
        if self.kind != "rsa":
            raise UnsupportedParameters(f"key {self._label!r} is not an RSA key and cannot open envelopes")
        if RsaPadding(padding) is RsaPadding.OAEP:
            params = oaep or OaepParams()
            mechanism = "RSA_PKCS_OAEP"
            args: tuple[str, str, bytes] | None = (
                HashName(params.hash).value,
                HashName(params.mgf_hash).value,
                params.label,
            )
        else:
            mechanism, args = "RSA_PKCS", None
        status, value = await self._run("unwrap", mechanism, "unwrap", self._label, args, bytes(ciphertext), key_size)
        if status == "unsupported":
            raise UnsupportedParameters(value)
        if status != "ok":
            raise KeyBackendError(f"unwrap with {self._label!r} ({mechanism}) failed: {value}")
        key, detail = value
        return Unwrapped(key=key, genuine=detail == "ok", detail=detail)

    async def has_reject_secret(self) -> bool:
        """Whether the token holds this key's implicit-rejection secret (else each worker makes its own)."""
        status, value = await self._pool.call("has_reject_secret", self._label)
        if status != "ok":
            raise KeyBackendError(f"looking up the rejection secret of {self._label!r} failed: {value}")
        return bool(value)

    async def reject_check(self, context: bytes) -> bytes | None:
        """A check value of this key's rejection secret: HMAC-SHA256 of the constant `context` under it, on
        the token (scepd/nodekeys.py compares it between nodes); None if the token holds no secret for it."""
        status, value = await self._pool.call("reject_check", self._label, context)
        if status != "ok":
            raise KeyBackendError(f"computing the check value of {self._label!r}'s rejection secret failed: {value}")
        return None if value is None else bytes(value)

    def __repr__(self) -> str:
        return f"Pkcs11Key(label={self._label!r}, kind={self.kind!r})"
