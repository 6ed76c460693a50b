"""Content-encryption ciphers a SCEP envelope may use, and their CBC primitives.

Kept apart from the CMS structures so the envelope code only deals with
ASN.1, and so the list of what we accept is in one place.
"""

from __future__ import annotations

import enum

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from scepd import oids


class ContentCipher(enum.Enum):
    """(OID, asn1crypto name, key size in bytes, block size in bytes)."""

    AES128_CBC = (oids.AES128_CBC, "aes128_cbc", 16, 16)
    AES192_CBC = (oids.AES192_CBC, "aes192_cbc", 24, 16)
    AES256_CBC = (oids.AES256_CBC, "aes256_cbc", 32, 16)
    DES3_CBC = (oids.DES_EDE3_CBC, "tripledes_3key", 24, 8)
    DES_CBC = (oids.DES_CBC, "des", 8, 8)

    @property
    def oid(self) -> str:
        return self.value[0]

    @property
    def asn1_name(self) -> str:
        return self.value[1]

    @property
    def key_size(self) -> int:
        return self.value[2]

    @property
    def block_size(self) -> int:
        return self.value[3]

    @classmethod
    def from_oid(cls, oid: str) -> ContentCipher | None:
        for cipher in cls:
            if cipher.oid == oid:
                return cipher
        return None

    def _algorithm(self, key: bytes) -> CipherAlgorithm:
        if len(key) != self.key_size:
            raise ValueError(f"{self.name} needs a {self.key_size}-byte key, got {len(key)}")
        if self is ContentCipher.DES_CBC:
            # cryptography has no single DES; EDE with K1=K2=K3 is exactly DES.
            return TripleDES(key * 3)
        if self is ContentCipher.DES3_CBC:
            return TripleDES(key)
        return algorithms.AES(key)

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        """CBC with PKCS#7 padding, as CMS requires (RFC 5652 6.3)."""
        pad = self.block_size - len(plaintext) % self.block_size
        enc = Cipher(self._algorithm(key), modes.CBC(iv)).encryptor()
        return enc.update(plaintext + bytes([pad]) * pad) + enc.finalize()

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes) -> tuple[bool, bytes]:
        """CBC decryption and PKCS#7 unpadding: (padding valid, plaintext).

        Never raises for a bad key or padding and never stops at the first bad
        byte: whether the padding was right is the secret a CBC padding oracle
        wants, so the caller folds it into one answer with everything else.
        Shapes that are public (IV and ciphertext lengths, checked at parse
        time) and a key of the wrong size (impossible after `unwrap`) do raise.
        """
        if len(iv) != self.block_size:
            raise ValueError(f"{self.name} needs a {self.block_size}-byte IV, got {len(iv)}")
        if not ciphertext or len(ciphertext) % self.block_size:
            raise ValueError("ciphertext is not a whole number of blocks")
        dec = Cipher(self._algorithm(key), modes.CBC(iv)).decryptor()
        padded = dec.update(ciphertext) + dec.finalize()
        pad = padded[-1]
        bad = int(not 1 <= pad <= self.block_size)
        for i in range(1, self.block_size + 1):
            bad |= int(i <= pad) & int(padded[-i] != pad)
        cut = pad if not bad else 0
        return not bad, padded[: len(padded) - cut]
