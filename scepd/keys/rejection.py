"""Implicit rejection for RSA key transport: the pieces every Decrypter shares.

A server that opens strangers' RSA blocks must not let them learn whether a
block's padding was right (Bleichenbacher 1998, Manger 2001, ROBOT 2017).
scepd never reports it: when a block does not unwrap to a key of the length
the envelope's cipher needs, the backend hands back a substitute of that
length instead, computed as a keyed hash of the ciphertext under a secret
that belongs to the key. The request then fails later, exactly where a wrong
key would make it fail, with the same answer (RFC 5246 7.4.7.1 does the same
with the premaster secret; OpenSSL 3.2 made it the default for PKCS#1 v1.5).

Python gives no constant-time guarantees; the helpers below only avoid the
obvious data-dependent early exits and branches. What is left (the token's
own timing, the interpreter) is described in docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac

# What the secret's PRF is fed: a fixed context, the wanted length, the ciphertext.
_CONTEXT = b"scepd implicit rejection v1\0"


def prf_input(ciphertext: bytes, key_size: int) -> bytes:
    """The message the key's rejection secret MACs to make the substitute key."""
    return _CONTEXT + key_size.to_bytes(2, "big") + ciphertext


def substitute_key(mac: bytes, key_size: int) -> bytes:
    """A `key_size`-byte key from the secret's MAC output (HMAC-SHA256, 32 bytes)."""
    out, counter = b"", 0
    while len(out) < key_size:  # content keys are at most 32 bytes; longer ones are stretched
        out += hashlib.sha256(mac + counter.to_bytes(4, "big")).digest() if counter else mac
        counter += 1
    return out[:key_size]


def software_substitute(secret: bytes, ciphertext: bytes, key_size: int) -> bytes:
    """The substitute key for a key whose secret is in process memory (the software key)."""
    return substitute_key(hmac.new(secret, prf_input(ciphertext, key_size), hashlib.sha256).digest(), key_size)


def select(use_genuine: bool, genuine: bytes, substitute: bytes) -> bytes:
    """`genuine` if `use_genuine` else `substitute`, by masking rather than branching.

    `genuine` is cut or padded to the substitute's length first, so its
    (secret) length does not pick a different code path either.
    """
    n = len(substitute)
    g = genuine[:n].ljust(n, b"\0")
    mask = -int(use_genuine)  # all ones or all zeros
    x, y = int.from_bytes(g, "big"), int.from_bytes(substitute, "big")
    return ((x & mask) | (y & ~mask)).to_bytes(n, "big")


def _mgf1(seed: bytes, length: int, hash: str) -> bytes:
    size = hashlib.new(hash).digest_size
    out = b"".join(hashlib.new(hash, seed + i.to_bytes(4, "big")).digest() for i in range(-(-length // size)))
    return out[:length]


def oaep_decode(em: bytes, hash: str, mgf_hash: str, label: bytes) -> tuple[bool, bytes]:
    """EME-OAEP decoding (RFC 8017 7.1.2 step 3) of a raw RSA result.

    Returns (valid, message). Every byte is looked at whatever the outcome:
    no early exit on the first bad byte, the checks are folded into one flag,
    and the separator is found by a full scan. Only `em`'s length (public:
    the modulus size) decides the amount of work.
    """
    h_len, k = hashlib.new(hash).digest_size, len(em)
    if k < 2 * h_len + 2:
        return False, b""
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = bytes(a ^ b for a, b in zip(masked_seed, _mgf1(masked_db, h_len, mgf_hash)))
    db = bytes(a ^ b for a, b in zip(masked_db, _mgf1(seed, k - h_len - 1, mgf_hash)))
    good = int(hmac.compare_digest(db[:h_len], hashlib.new(hash, label).digest()))
    good &= int(em[0] == 0)
    looking, index, stray = 1, 0, 0
    for i, byte in enumerate(db[h_len:]):
        is_one, is_zero = int(byte == 1), int(byte == 0)
        index |= i * (looking & is_one)  # the first 0x01, recorded once
        stray |= looking & (1 - is_one) & (1 - is_zero)  # a byte other than 0x00 before it
        looking &= 1 - is_one
    good &= (1 - looking) & (1 - stray)
    return bool(good), db[h_len + index + 1 :]
