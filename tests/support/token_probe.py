"""Look at a daemon's token directly, in a process of its own (SoftHSM2 reads SOFTHSM2_CONF once per process,
and the test session already has its own token loaded).

    python -m tests.support.token_probe CONFIG keys LABEL...      # JSON: attributes and a C_Decrypt attempt per key
    python -m tests.support.token_probe CONFIG drop-secret LABEL  # delete LABEL.reject, as a state made before it existed

The C_Decrypt attempt uses a block encrypted to the key's own public key with PKCS#1 v1.5, so only the
token's refusal (not the ciphertext) can make it fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11._pkcs11 as _p11
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, Mechanism, ObjectClass

from scepd.config import load
from scepd.keys.pkcs11.session import TokenSession
from scepd.wiring import token_config


def describe(session: TokenSession, label: str) -> dict[str, Any]:
    key = session.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    out: dict[str, Any] = {
        a.name: bool(key[a])
        for a in (
            Attribute.SIGN,
            Attribute.DECRYPT,
            Attribute.UNWRAP,
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.ALWAYS_SENSITIVE,
            Attribute.NEVER_EXTRACTABLE,
        )
    }
    public = load_der_public_key(session.public_key_der(label) or b"")
    assert isinstance(public, rsa.RSAPublicKey)
    # python-pkcs11 only offers .decrypt() on a key whose CKA_DECRYPT is true: ask the token anyway.
    key.__class__ = type("PrivateKey", (type(key), _p11.DecryptMixin), {})
    try:
        key.decrypt(public.encrypt(b"k" * 16, padding.PKCS1v15()), mechanism=Mechanism.RSA_PKCS)
        out["c_decrypt"] = "ok"
    except pkcs11.exceptions.PKCS11Error as e:
        # python-pkcs11 0.10 leaves CKR_KEY_FUNCTION_NOT_PERMITTED (0x68) unmapped.
        refused = type(e).__name__ == "KeyFunctionNotPermitted" or "code 0x68" in str(e)
        out["c_decrypt"] = "CKR_KEY_FUNCTION_NOT_PERMITTED" if refused else f"{type(e).__name__}: {e}"
    out["reject_secret"] = session.has_reject_secret(label)
    return out


def main(argv: list[str]) -> None:
    config = load(Path(argv[0]))
    session = TokenSession(token_config(config))
    try:
        if argv[1] == "keys":
            print(json.dumps({label: describe(session, label) for label in argv[2:]}))
        elif argv[1] == "drop-secret":
            for obj in session.session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: argv[2] + ".reject"}
            ):
                obj.destroy()
        else:
            raise SystemExit(f"unknown probe {argv[1]!r}")
    finally:
        session.close()


if __name__ == "__main__":
    main(sys.argv[1:])
