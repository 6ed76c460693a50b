"""The narrow key interface that everything above the key backends sees.

Code that signs a certificate or a CertRep, or opens a SCEP envelope, holds a
`Signer` / `Decrypter` and never key material. The PKCS#11 backend and the
in-memory software backend (unit tests, test clients) both implement it, so
the SCEP codec and the enrollment pipeline cannot tell which one they use.

The methods are async because a token operation must run off the Trio event
loop; the software backend simply answers at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


class HashName(str, enum.Enum):
    """Digests a signature may be made with; values match asn1crypto/cryptography names."""

    SHA1 = "sha1"
    SHA224 = "sha224"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


def hash_algorithm(name: HashName | str) -> hashes.HashAlgorithm:
    """The cryptography hash object for a HashName (the one table from names to algorithms)."""
    return getattr(hashes, HashName(name).name)()  # type: ignore[no-any-return]


class RsaPadding(str, enum.Enum):
    """RSA key-transport paddings a SCEP envelope may use (RFC 8017)."""

    PKCS1V15 = "pkcs1v15"
    OAEP = "oaep"


@dataclass(frozen=True)
class OaepParams:
    """OAEP parameters as carried in the RecipientInfo; Windows sends the SHA-1 defaults."""

    hash: HashName = HashName.SHA1
    mgf_hash: HashName = HashName.SHA1
    label: bytes = b""


class KeyError_(Exception):
    """Base for key-backend failures (kept distinct from bad input)."""


class KeyBackendError(KeyError_):
    """The key backend (token, HSM) failed: an operational fault, not the client's."""


class UnsupportedParameters(KeyError_):
    """The key cannot open this padding or these OAEP parameters safely (badAlg).

    Decided from public facts only (the parameters the request names, the
    token's mechanisms and the key's attributes), never from the ciphertext.
    """


@dataclass(frozen=True)
class Unwrapped:
    """A content-encryption key of the length the envelope's cipher needs.

    `genuine` is False when the key-transport block did not unwrap (bad
    padding, wrong length, not for this key) and `key` is the substitute of
    implicit rejection. It is for the server's log and metrics only: the
    caller must go on exactly as with a genuine key, so that a stranger
    cannot tell the two apart (Bleichenbacher, ROBOT).
    """

    key: bytes = field(repr=False)
    genuine: bool
    detail: str  # "ok", or why the block was rejected; internal only


@runtime_checkable
class Signer(Protocol):
    """A private key that signs; `sign` returns a signature ready for X.509/CMS.

    RSA keys sign with PKCS#1 v1.5; EC keys return the DER `Ecdsa-Sig-Value`
    (not PKCS#11's raw r||s), so callers can drop it into a certificate as is.
    """

    @property
    def label(self) -> str:
        """A short name for metrics and logs (e.g. 'ca', 'ra'); never secret."""
        ...

    @property
    def public_key(self) -> PublicKeyTypes: ...

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        """Sign `data` (not a digest) with `hash`."""
        ...


@runtime_checkable
class Decrypter(Protocol):
    """An RSA private key that unwraps a CMS key-transport content-encryption key.

    There is deliberately no plain `decrypt`: a method that says whether a
    stranger's RSA block decrypted is a padding oracle. `unwrap` always
    returns a key of `key_size` bytes (implicit rejection), derived from the
    ciphertext under a secret of this key when the block does not unwrap.
    It raises `UnsupportedParameters` for parameters it will not handle and
    `KeyBackendError` for a fault of the backend, never for bad ciphertext.
    """

    @property
    def label(self) -> str: ...

    @property
    def public_key(self) -> PublicKeyTypes: ...

    async def unwrap(
        self, ciphertext: bytes, padding: RsaPadding, oaep: OaepParams | None, key_size: int
    ) -> Unwrapped: ...
