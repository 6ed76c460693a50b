"""A TPM 2.0 as the token, through tpm2-pkcs11: what differs from SoftHSM2 and how scepd copes.

Measured on Debian 12 (tpm2-pkcs11 1.9.0, swtpm 0.7.1, docs/keys.md "TPM"):

* Key types. RSA-2048/3072 and P-256/P-384 only: the TPM makes no RSA-4096
  key and no P-521 signature. OAEP works without a label and with the MGF
  hash equal to the OAEP hash; anything else is refused before the token
  is asked (`oaep_supported`), since the RA key also signs and raw RSA
  with it is never an option.
* Sign-only keys. tpm2-pkcs11 checks the public template against what the
  TPM object can do, with CKA_ENCRYPT and CKA_VERIFY swapped: a key whose TPM
  object only signs is accepted with CKA_ENCRYPT true and CKA_VERIFY false on
  its public half (`public_template`). Nothing is verified on the token, and
  the public half never decrypts anything, so neither matters; the private
  half comes out CKA_SIGN true, CKA_DECRYPT and CKA_UNWRAP false.
* What the token reports is a database row, not the chip. tpm2-pkcs11 lets
  CKA_DECRYPT be set true on a sign-only key, and CKA_SENSITIVE false or
  CKA_EXTRACTABLE true; the TPM still refuses to decrypt with it
  (TPM_RC_ATTRIBUTES) and never hands out the private key, which only exists
  wrapped by the TPM's storage key.
* No secret keys. C_GenerateKey and C_CreateObject of a secret key are not
  supported, so the RA's implicit-rejection secret cannot live on the token:
  each token session gets a random one in process memory (`SessionSecret`),
  as SoftHSM2 tokens made before issue 13 get one per session.
* A failed C_Decrypt (bad padding: what strangers send) leaves its operation
  open, and every later C_DecryptInit of that session fails
  (CKR_OPERATION_ACTIVE). C_DecryptFinal with a buffer ends it (no TPM
  command, under 0.2 ms), so scepd calls it after every decrypt, good or bad
  (`end_decrypt`); were that to fail, the session is replaced before its next
  use. Closing the session instead would log the whole token out.
* C_Decrypt answers CKR_GENERAL_ERROR both for bad padding and for a TPM
  that went away (a reset mid-call). A 503 must not turn into "your envelope
  did not open", so every decrypt, good or bad, is followed by a C_GenerateRandom:
  when that fails as well, the failure is the token's.
* Threads. python-pkcs11 calls C_Initialize(NULL), so tpm2-pkcs11 takes no
  locks; two sessions used from two threads at once fail ("Esys called in
  the wrong order"). scepd already calls a module from one thread per process
  (pkcs11.token_thread) or from worker processes, each with its own
  connection to the resource manager, which serialises them.
* Keys made by another process are invisible until the module is
  re-initialised in this one, and a token created after the module was loaded
  likewise: `TokenSession` re-initialises once when the token is not found.
* The module lists a second, empty slot (where C_InitToken makes a new
  token); tokens are always found by label, so it is never used by mistake.

Creating a token needs no tpm2_ptool (whose `addtoken` takes the PINs as
arguments, visible to every user in the process list): C_InitToken on that
empty slot makes the token and its primary key, then C_InitPIN sets the user
PIN. python-pkcs11 has no C_InitToken, so `create_token` runs these few calls
through ctypes in a child process that gets the PINs on its stdin.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

DEFAULT_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
DEFAULT_TCTI = "device:/dev/tpmrm0"  # the kernel's resource manager on a real TPM

# What a locked-out TPM means and how to end it (the lockout hierarchy's password is empty unless set).
LOCKOUT_TEXT = (
    "dictionary-attack lockout (wrong PINs or unorderly TPM resets): wait for the TPM's recovery time, "
    "or clear it with `tpm2_dictionarylockout --clear-lockout` (docs/keys.md)"
)
LOCKOUT_RETRY_SECONDS = 60.0

RSA_SIZES = (2048, 3072)
CURVES = ("P-256", "P-384")


class TpmUnsupported(ValueError):
    """A key type or parameter the TPM cannot do, said before anything is created."""


def is_tpm_module(module: str) -> bool:
    return "tpm2_pkcs11" in os.path.basename(module)


def check_key_spec(kind: str, size: int = 2048, curve: str = "P-256") -> None:
    """Refuse, with the reason, a key the TPM cannot generate or use."""
    if kind == "rsa" and size not in RSA_SIZES:
        raise TpmUnsupported(
            f"RSA-{size} is not available on a TPM 2.0 (tpm2-pkcs11): use RSA-2048 or RSA-3072, or an HSM"
        )
    if kind == "ec" and curve not in CURVES:
        raise TpmUnsupported(f"{curve} is not available on a TPM 2.0 (tpm2-pkcs11): use P-256 or P-384, or an HSM")


def check_public_key(what: str, public_key: Any) -> None:
    """`check_key_spec` for a key already made: a certificate's public key that must live in the TPM."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        check_key_spec("rsa", public_key.key_size)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        check_key_spec("ec", curve=names.get(public_key.curve.name, public_key.curve.name))
    else:
        raise TpmUnsupported(f"{what}: {type(public_key).__name__} keys are not available on a TPM 2.0")


def oaep_supported(hash_name: str, mgf_hash: str, label: bytes) -> bool:
    """OAEP parameters tpm2-pkcs11 decrypts correctly: no label, MGF1 with the OAEP hash itself."""
    return not label and hash_name == mgf_hash and hash_name in ("sha1", "sha256", "sha384")


def public_template(decrypt: bool) -> dict[Any, bool]:
    """The public-half capabilities tpm2-pkcs11 accepts for a key that does (not) decrypt.

    A sign-only TPM object is described by tpm2-pkcs11 as ENCRYPT true,
    VERIFY false, and a template that says otherwise is refused with
    CKR_GENERAL_ERROR ("User specified and TPM specified attr mismatch").
    """
    from pkcs11 import Attribute

    if decrypt:
        return {Attribute.VERIFY: True, Attribute.ENCRYPT: True, Attribute.WRAP: True}
    return {Attribute.VERIFY: False, Attribute.ENCRYPT: True, Attribute.WRAP: False}


class SessionSecret:
    """An implicit-rejection secret for one token session, held in this process (the TPM has no
    secret-key objects). It answers `sign(data, mechanism=SHA256_HMAC)` like a token secret key."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def sign(self, data: bytes, mechanism: Any = None) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "SessionSecret(<secret>)"


_CKR_OK, _CKR_OPERATION_NOT_INITIALIZED = 0x0, 0x91
_modules: dict[str, Any] = {}


def end_decrypt(module: str, session_handle: int) -> bool:
    """End a decrypt operation a failed C_Decrypt left open on this session; True if none is left.

    python-pkcs11 has no C_DecryptFinal, so it is called through ctypes on the
    module python-pkcs11 already loaded (dlopen gives the same instance).
    """
    lib = _modules.get(module)
    if lib is None:
        lib = _modules[module] = ctypes.CDLL(module)
    size = 1024
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_ulong(size)
    rv = lib.C_DecryptFinal(ctypes.c_ulong(session_handle), buffer, ctypes.byref(length))
    ctypes.memset(buffer, 0, size)
    return int(rv) in (_CKR_OK, _CKR_OPERATION_NOT_INITIALIZED)


def environment(store: str | None, tcti: str | None) -> dict[str, str]:
    """The variables tpm2-pkcs11 reads when it initialises: where its store is and how to reach the TPM."""
    env = {}
    if store:
        env["TPM2_PKCS11_STORE"] = store
    if tcti:
        env["TPM2_PKCS11_TCTI"] = tcti
    return env


def create_token(
    label: str,
    so_pin: str,
    user_pin: str,
    *,
    module: str = DEFAULT_MODULE,
    store: str | None = None,
    tcti: str | None = None,
    timeout: float = 60.0,
) -> None:
    """Create the token `label` in the tpm2-pkcs11 store, with these PINs, in a child process.

    The PINs go to the child on its stdin, never on a command line or in its
    environment. The store directory must exist (tpm2-pkcs11 creates its
    database there).
    """
    env = dict(os.environ) | environment(store, tcti)
    request = json.dumps({"module": module, "label": label, "so_pin": so_pin, "user_pin": user_pin})
    proc = subprocess.run(
        [sys.executable, "-m", "scepd.keys.tpm"],
        input=request,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"creating TPM token {label!r} failed: {' | '.join(lines[-3:]) or proc.returncode}")


# --- the child process: C_InitToken and C_InitPIN through ctypes ---------------------------------

_CKF_TOKEN_INITIALIZED = 0x400
_CKF_RW_SESSION, _CKF_SERIAL_SESSION = 0x2, 0x4
_CKU_SO = 0
_CKR_NAMES = {0x3: "CKR_SLOT_ID_INVALID", 0xA0: "CKR_PIN_INCORRECT", 0xA2: "CKR_PIN_LEN_RANGE", 0x5: "GENERAL_ERROR"}


class _TokenInfo(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturer", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serial", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("rest", ctypes.c_ulong * 24),  # the counters and versions after flags; unused here
    ]


def _init_token(request: Mapping[str, str]) -> None:
    lib = ctypes.CDLL(request["module"])
    ul = ctypes.c_ulong

    def check(rv: int, what: str) -> None:
        if rv != 0:
            raise SystemExit(f"{what} failed: {_CKR_NAMES.get(rv, hex(rv))}")

    def tokens() -> list[tuple[int, bytes, int]]:
        count = ul(0)
        check(lib.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)), "C_GetSlotList")
        slots = (ul * count.value)()
        check(lib.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)), "C_GetSlotList")
        out = []
        for slot in slots[: count.value]:
            info = _TokenInfo()
            check(lib.C_GetTokenInfo(ul(slot), ctypes.byref(info)), "C_GetTokenInfo")
            out.append((int(slot), info.label.rstrip(b" \0"), int(info.flags)))
        return out

    label = request["label"].encode()
    so_pin, user_pin = request["so_pin"].encode(), request["user_pin"].encode()
    if len(label) > 32:
        raise SystemExit("the token label is longer than 32 bytes")
    check(lib.C_Initialize(None), "C_Initialize")
    try:
        if any(found == label for _, found, _ in tokens()):
            raise SystemExit(f"a token labelled {request['label']!r} already exists in this store")
        empty = [slot for slot, _, flags in tokens() if not flags & _CKF_TOKEN_INITIALIZED]
        if not empty:
            raise SystemExit("the module offers no empty slot to initialise")
        check(lib.C_InitToken(ul(empty[0]), so_pin, ul(len(so_pin)), label.ljust(32, b" ")), "C_InitToken")
        # The new token shows under a new slot list only after the module is re-initialised.
        check(lib.C_Finalize(None), "C_Finalize")
        check(lib.C_Initialize(None), "C_Initialize")
        slot = next(slot for slot, found, _ in tokens() if found == label)
        session = ul(0)
        flags = ul(_CKF_RW_SESSION | _CKF_SERIAL_SESSION)
        check(lib.C_OpenSession(ul(slot), flags, None, None, ctypes.byref(session)), "C_OpenSession")
        check(lib.C_Login(session, ul(_CKU_SO), so_pin, ul(len(so_pin))), "C_Login (SO)")
        check(lib.C_InitPIN(session, user_pin, ul(len(user_pin))), "C_InitPIN")
        check(lib.C_Logout(session), "C_Logout")
        check(lib.C_CloseSession(session), "C_CloseSession")
    finally:
        lib.C_Finalize(None)


def main() -> None:
    """`python -m scepd.keys.tpm` with {"module", "label", "so_pin", "user_pin"} as JSON on stdin."""
    _init_token(json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()
