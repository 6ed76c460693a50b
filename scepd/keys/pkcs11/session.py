"""The token side of scepd.keys.pkcs11: one PKCS#11 session, used by one thread.

python-pkcs11 0.10.1 calls C_Initialize(NULL), which tells SoftHSM2 the
application is single-threaded, so SoftHSM2 takes no locks of its own. Hence
everything here is synchronous and a `TokenSession` is only ever touched by
one OS thread: the module's dedicated thread in-process (workers=0), or the
main thread of a worker process (scepd.keys.pkcs11.worker, workers=N).

Replies cross the process boundary as plain tuples: ("ok", value),
("decrypt", message) for a ciphertext that does not decrypt, or ("backend",
message) for a token fault.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util import ec as p11ec

from scepd.keys import rejection, tpm
from scepd.keys.pkcs11 import lock as token_lock
from scepd.keys.pkcs11.lock import TokenBusy
from scepd.logs import event

if TYPE_CHECKING:
    from scepd.keys.pkcs11.config import TokenConfig

CURVES = {"P-256": "secp256r1", "P-384": "secp384r1"}
_HASH_MECH = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
# PKCS#11 return codes of C_Decrypt that mean "this ciphertext is not for this key". SoftHSM2
# answers CKR_GENERAL_ERROR when OpenSSL rejects the padding, so that counts too.
_BAD_CIPHERTEXT = (
    pkcs11.exceptions.EncryptedDataInvalid,
    pkcs11.exceptions.EncryptedDataLenRange,
    pkcs11.exceptions.DataInvalid,
    pkcs11.exceptions.DataLenRange,
    pkcs11.exceptions.GeneralError,
)
_UNSUPPORTED = (
    pkcs11.exceptions.ArgumentsBad,
    pkcs11.exceptions.MechanismInvalid,
    pkcs11.exceptions.MechanismParamInvalid,
)
_loaded_conf: dict[str, str | None] = {}
log = logging.getLogger("scepd.token")


class BadCiphertext(Exception):
    pass


class Unsupported(Exception):
    """Parameters this key will not open (decided before looking at the ciphertext)."""


REJECT_SUFFIX = ".reject"  # label of a key's implicit-rejection secret: "<key label>.reject"


def _load(cfg: TokenConfig) -> Any:
    """Load the module once per process; SoftHSM2 reads SOFTHSM2_CONF only then (tpm2-pkcs11 its store and TCTI)."""
    if cfg.module not in _loaded_conf:
        if cfg.softhsm2_conf:
            os.environ["SOFTHSM2_CONF"] = cfg.softhsm2_conf
        os.environ.update(tpm.environment(getattr(cfg, "tpm2_pkcs11_store", None), getattr(cfg, "tpm2_tcti", None)))
        _loaded_conf[cfg.module] = os.environ.get("SOFTHSM2_CONF")
    elif cfg.softhsm2_conf and _loaded_conf[cfg.module] != cfg.softhsm2_conf:
        raise RuntimeError(f"{cfg.module} is already loaded with SOFTHSM2_CONF={_loaded_conf[cfg.module]}")
    return pkcs11.lib(cfg.module)


def start_failure(e: BaseException) -> tuple[str, str]:
    """(kind, message) for an exception raised while a session opened; `kind` picks the CLI's exit code."""
    if isinstance(e, TokenBusy):
        return "busy", str(e)
    kinds: dict[type[BaseException], str] = {
        pkcs11.exceptions.NoSuchToken: "no_token",
        pkcs11.exceptions.TokenNotPresent: "no_token",
        pkcs11.exceptions.TokenNotRecognised: "no_token",
        pkcs11.exceptions.PinIncorrect: "pin_incorrect",
        pkcs11.exceptions.PinLenRange: "pin_incorrect",
        pkcs11.exceptions.PinLocked: "pin_locked",
        pkcs11.exceptions.PinExpired: "pin_locked",
        pkcs11.exceptions.UserPinNotInitialized: "pin_locked",
    }
    kind = kinds.get(type(e))
    if kind is None and (type(e) is pkcs11.exceptions.PKCS11Error or isinstance(e, OSError)):
        kind = "module"  # python-pkcs11 raises the bare base class when the module file does not load
    what = {
        "no_token": "no such token",
        "pin_incorrect": "the PIN was refused",
        "pin_locked": "the user PIN is locked, expired or not initialised (on a TPM: " + tpm.LOCKOUT_TEXT + ")",
        "module": "the PKCS#11 module did not load",
    }.get(kind or "", "the token worker could not start")
    detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return kind or "other", f"{what} ({detail})"


class TokenSession:
    """A logged-in R/W session on one token, with private-key handles cached by label."""

    def __init__(self, cfg: TokenConfig) -> None:
        # Loading (C_Initialize), finding the token and logging in read and rewrite the
        # token's files: one process at a time (see token_lock).
        self._cfg = cfg
        self.tpm = tpm.is_tpm_module(cfg.module)
        with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, getattr(cfg, "timeout", 30.0)):
            try:
                self.session = self._open(cfg)
            except (pkcs11.exceptions.NoSuchToken, pkcs11.exceptions.GeneralError, pkcs11.exceptions.DeviceError):
                if not self.tpm:
                    raise
                # tpm2-pkcs11 sees a token made by another process, and a TPM that was reset, only
                # after C_Initialize again (this invalidates the process's other sessions of the module).
                _load(cfg).reinitialize()
                self.session = self._open(cfg)
        self._broken = False  # tpm2-pkcs11: a token fault, maybe a TPM reset; re-initialise before the next use
        self._locked_until = 0.0  # monotonic time before which a locked-out TPM is not asked again
        self._lockout_reported = False
        self._keys: dict[str, Any] = {}
        self._secrets: dict[str, Any] = {}
        self._unsupported: set[tuple[str, str, bytes]] = set()
        self.ephemeral_secrets: set[str] = set()  # keys whose rejection secret exists in this session only
        self._stale = False  # tpm2-pkcs11: a failed C_Decrypt left the session unusable

    @staticmethod
    def _open(cfg: TokenConfig) -> Any:
        token = _load(cfg).get_token(token_label=cfg.token_label)
        try:
            return token.open(rw=True, user_pin=cfg.pin)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # Login is token-wide: another session of this process already did it.
            return token.open(rw=True)

    def close(self) -> None:
        self.session.close()

    def _recover_or_locked(self) -> str | None:
        """Recover a broken TPM session; None if it worked (or failed in a way the call will meet
        again), else why not: a dictionary-attack lockout, which more logins would not end.

        The lockout is logged once, with how to clear it, and the TPM is not asked again for a
        minute: retries cannot help, and every refused login is noise in the TPM's log.
        """
        if time.monotonic() < self._locked_until:
            return tpm.LOCKOUT_TEXT
        try:
            self._recover()
        except pkcs11.exceptions.PinLocked:
            self._locked_until = time.monotonic() + tpm.LOCKOUT_RETRY_SECONDS
            if not self._lockout_reported:
                self._lockout_reported = True
                event(log, logging.ERROR, "token_pin_locked", token=self._cfg.token_label, hint=tpm.LOCKOUT_TEXT)
            return tpm.LOCKOUT_TEXT
        except Exception:  # noqa: BLE001 - the TPM not back yet: the call itself fails and says why
            return None
        self._lockout_reported = False
        return None

    def _recover(self) -> None:
        """After a token fault on a TPM: re-initialise the module and log in again (about 0.1 s).

        A TPM that restarted drops the contexts tpm2-pkcs11 holds, and every
        call fails until C_Initialize runs again in this process. Still failing
        (the TPM not back yet) leaves the session broken for the next call to try.
        """
        try:
            self.session.close()
        except Exception:  # noqa: BLE001 - the old session is gone with the old TPM state anyway
            pass
        _load(self._cfg).reinitialize()
        self.session = self._open(self._cfg)
        self._keys.clear()
        self._secrets = {k: v for k, v in self._secrets.items() if isinstance(v, tpm.SessionSecret)}
        self._stale = self._broken = False

    def _replace_session(self) -> None:
        """A fresh, logged-in session for one tpm2-pkcs11 left unusable (see `_decrypt`).

        Closing a tpm2-pkcs11 session logs the token out, so the new one logs
        in again (a right PIN costs no dictionary-attack count). Key handles
        are looked up again; the rejection secrets held in this process stay.
        """
        token = self.session.token
        self.session.close()
        self.session = token.open(rw=True, user_pin=self._cfg.pin)
        self._keys.clear()
        self._secrets = {k: v for k, v in self._secrets.items() if isinstance(v, tpm.SessionSecret)}
        self._stale = False

    def _private(self, label: str) -> Any:
        key = self._keys.get(label)
        if key is None:
            key = self._keys[label] = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        return key

    def _find(self, cls: ObjectClass, label: str) -> Any | None:
        found = list(self.session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
        return found[0] if found else None

    def exists(self, label: str) -> bool:
        return any(self._find(c, label) is not None for c in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY))

    def public_key_der(self, label: str) -> bytes | None:
        """SubjectPublicKeyInfo of `label`: its public key object, else its certificate, else None."""
        pub = self._find(ObjectClass.PUBLIC_KEY, label)
        if pub is not None:
            if pub.key_type == KeyType.EC:
                return p11ec.encode_ec_public_key(pub)
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"), int.from_bytes(pub[Attribute.MODULUS], "big")
            )
            return numbers.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        cert = self.load_certificate(label)
        if cert is not None:
            from cryptography import x509

            return (
                x509.load_der_x509_certificate(cert)
                .public_key()
                .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
        return None

    def token_info(self) -> dict[str, str]:
        """What the token says it is (CK_TOKEN_INFO), to hold key URIs' token attributes against."""
        token = self.session.token
        serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else str(token.serial)
        return {
            "label": token.label.strip(),
            "manufacturer": token.manufacturer_id.strip(),
            "serial": serial.strip(),
            "model": token.model.strip(),
        }

    def inventory(self) -> list[tuple[str, str, bytes | None, bool, bool]]:
        """(label, 'rsa'|'ec', SPKI DER or None, CKA_SIGN, CKA_DECRYPT) for every private key on the token."""
        out = []
        for obj in list(self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
            label = obj.label
            if not label or obj.key_type not in (KeyType.RSA, KeyType.EC):
                continue
            self._keys[label] = obj
            out.append(
                (
                    label,
                    "rsa" if obj.key_type == KeyType.RSA else "ec",
                    self.public_key_der(label),
                    bool(obj[Attribute.SIGN]),
                    bool(obj[Attribute.DECRYPT]),
                )
            )
        return out

    def sign(self, label: str, mechanism: str, data: bytes) -> bytes:
        return bytes(self._private(label).sign(data, mechanism=Mechanism[mechanism]))

    def sign_pss(self, label: str, hash: str, data: bytes) -> bytes:
        """RSASSA-PSS: the token hashes, MGF1 with the same hash, salt as long as the digest.

        The parameters are spelled out: SoftHSM2 rejects PSS without them, and python-pkcs11's
        defaults are SHA-1's."""
        mechanism = Mechanism[f"{hash.upper()}_RSA_PKCS_PSS"]
        digest, mgf = _HASH_MECH[hash]
        salt = hashlib.new(hash).digest_size
        try:
            signature = self._private(label).sign(data, mechanism=mechanism, mechanism_param=(digest, mgf, salt))
        except _UNSUPPORTED as e:
            raise Unsupported(f"the token does not sign {mechanism.name}: {type(e).__name__}") from e
        return bytes(signature)

    def unwrap(
        self, label: str, oaep: tuple[str, str, bytes] | None, ciphertext: bytes, key_size: int
    ) -> tuple[bytes, str]:
        """A `key_size`-byte content key, and "ok" or why the block was rejected (implicit rejection).

        The substitute is computed first, for every request, on the token (an
        HMAC under the key's rejection secret), so a block that unwraps and one
        that does not cost the same token calls. Only the choice between the
        two keys depends on the outcome, and it is made by masking.
        """
        key = self._private(label)
        if oaep is not None:
            self._check_oaep(key, oaep)
        secret = self._reject_secret(label)
        mac = bytes(secret.sign(rejection.prf_input(ciphertext, key_size), mechanism=Mechanism.SHA256_HMAC))
        substitute = rejection.substitute_key(mac, key_size)
        try:
            plain, detail = self._decrypt(key, oaep, ciphertext), "ok"
        except BadCiphertext as e:
            plain, detail = b"", str(e)
        genuine = detail == "ok" and len(plain) == key_size
        if detail == "ok" and not genuine:
            detail = "content key length"
        return rejection.select(genuine, plain, substitute), detail

    def _check_oaep(self, key: Any, oaep: tuple[str, str, bytes]) -> None:
        """Refuse OAEP parameters the token cannot do when the key may also sign.

        Raw RSA (CKM_RSA_X_509) with a key that signs would let anyone who can
        send an envelope compute signatures with it, so the OAEP decoding in
        Python is only allowed for a key that exists solely to open envelopes.
        """
        if self.tpm and not tpm.oaep_supported(*oaep):
            self._unsupported.add(oaep)  # tpm2-pkcs11 decrypts these wrongly; raw RSA is never tried on a TPM
        if (oaep[2] or oaep in self._unsupported) and (key[Attribute.SIGN] or self.tpm):
            raise Unsupported(
                f"OAEP {oaep[0]}/{oaep[1]}{' with a label' if oaep[2] else ''} is not done by "
                "this token, and raw RSA is refused on a key that can sign"
            )

    def _decrypt(self, key: Any, oaep: tuple[str, str, bytes] | None, ciphertext: bytes) -> bytes:
        if oaep is None:
            mech, param = Mechanism.RSA_PKCS, None
        elif oaep[2] or oaep in self._unsupported:
            # SoftHSM 2.6 fails OAEP labels with CKR_GENERAL_ERROR, indistinguishable from a bad ciphertext.
            return self._decrypt_oaep_raw(key, oaep, ciphertext)
        else:
            mech, param = Mechanism.RSA_PKCS_OAEP, (_HASH_MECH[oaep[0]][0], _HASH_MECH[oaep[1]][1], None)
        try:
            return bytes(key.decrypt(ciphertext, mechanism=mech, mechanism_param=param))
        except _BAD_CIPHERTEXT as e:
            raise BadCiphertext(type(e).__name__) from None
        except _UNSUPPORTED:
            if oaep is None:
                raise
            # The token refused the parameters themselves (SoftHSM 2.6 only does OAEP with SHA-1):
            # remembered, then either raw RSA on a decrypt-only key or badAlg.
            self._unsupported.add(oaep)
            self._check_oaep(key, oaep)
            return self._decrypt_oaep_raw(key, oaep, ciphertext)
        finally:
            if self.tpm:
                # tpm2-pkcs11 leaves a failed C_Decrypt's operation open (CKR_OPERATION_ACTIVE from then
                # on). Ended after every decrypt, good or bad, so both paths cost the same; a session
                # whose operation will not end is replaced before its next use.
                self._stale = not tpm.end_decrypt(self._cfg.module, self.session.handle)
                # It also answers CKR_GENERAL_ERROR both for bad padding and for a TPM that went away,
                # and the second must be a 503, not a rejected envelope. So every decrypt, good or bad,
                # is followed by one small TPM command: if that fails too, the fault is the token's
                # (raised from here, replacing BadCiphertext), whatever the ciphertext was.
                self.session.generate_random(64)

    def _decrypt_oaep_raw(self, key: Any, oaep: tuple[str, str, bytes], ciphertext: bytes) -> bytes:
        k = len(key[Attribute.MODULUS])
        if len(ciphertext) != k:
            raise BadCiphertext("ciphertext length differs from the modulus length")
        try:
            em = bytes(key.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509)).rjust(k, b"\0")
        except _BAD_CIPHERTEXT as e:
            raise BadCiphertext(type(e).__name__) from None
        valid, plain = rejection.oaep_decode(em, *oaep)
        if not valid:
            raise BadCiphertext("OAEP decoding error")
        return plain

    def _reject_secret(self, label: str) -> Any:
        """The key's rejection secret on the token, or (older tokens) one for this session only."""
        secret = self._secrets.get(label)
        if secret is None:
            found = self._find(ObjectClass.SECRET_KEY, label + REJECT_SUFFIX)
            if found is None:
                found = tpm.SessionSecret() if self.tpm else self._generate_secret(label, store=False)
                self.ephemeral_secrets.add(label)
            secret = self._secrets[label] = found
        return secret

    def _generate_secret(self, label: str, *, store: bool) -> Any:
        return self.session.generate_key(
            KeyType.GENERIC_SECRET,
            256,
            label=label + REJECT_SUFFIX,
            store=store,
            template={
                Attribute.SIGN: True,
                Attribute.VERIFY: False,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
            },
        )

    def has_reject_secret(self, label: str) -> bool:
        return self._find(ObjectClass.SECRET_KEY, label + REJECT_SUFFIX) is not None

    def reject_check(self, label: str, context: bytes) -> bytes | None:
        """HMAC-SHA256 of the constant `context` under `label`'s persistent rejection secret, computed on
        the token; None when the token holds no such secret (each session then makes its own, so there is
        nothing to compare). Only a constant is MACed here: a stranger's data never reaches this."""
        secret = self._find(ObjectClass.SECRET_KEY, label + REJECT_SUFFIX)
        if secret is None:
            return None
        return bytes(secret.sign(context, mechanism=Mechanism.SHA256_HMAC))

    def ensure_reject_secret(self, label: str) -> bool:
        """Create the persistent rejection secret of `label` if it has none; True if created.

        A TPM token cannot hold one (no secret-key objects): False, and each session makes its own.
        """
        if self.tpm or self._find(ObjectClass.SECRET_KEY, label + REJECT_SUFFIX) is not None:
            return False
        self._generate_secret(label, store=True)
        self._secrets.pop(label, None)
        self.ephemeral_secrets.discard(label)
        return True

    def ping(self) -> None:
        self.session.generate_random(64)

    def generate(self, label: str, kind: str, size: int, curve: str, decrypt: bool = False) -> bytes:
        """A key pair on the token; `decrypt` only for an RSA key whose job is opening envelopes.

        A key that signs certificates must never decrypt: an RSA decryption
        oracle on it is a signing oracle (issue 13). So CKA_DECRYPT and
        CKA_UNWRAP are set false explicitly, not left to the token's default.
        """
        if self.exists(label):
            raise FileExistsError(f"a key labelled {label!r} already exists on the token")
        if decrypt and kind != "rsa":
            raise ValueError("only an RSA key can open SCEP envelopes")
        key_id = secrets.token_bytes(16)
        private = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
        }
        public = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True}
        if self.tpm:
            tpm.check_key_spec(kind, size, curve)
            public |= tpm.public_template(decrypt)
        if kind == "rsa":
            if size not in (2048, 3072, 4096):
                raise ValueError("RSA key size must be 2048, 3072 or 4096")
            private |= {Attribute.DECRYPT: decrypt, Attribute.UNWRAP: decrypt}
            if not self.tpm:
                public |= {Attribute.ENCRYPT: decrypt, Attribute.WRAP: decrypt}
            self.session.generate_keypair(
                KeyType.RSA, size, id=key_id, label=label, store=True, public_template=public, private_template=private
            )
        elif kind == "ec":
            if curve not in CURVES:
                raise ValueError(f"EC curve must be one of {', '.join(CURVES)}")
            params = self.session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: p11ec.encode_named_curve_parameters(CURVES[curve])}, local=True
            )
            params.generate_keypair(
                id=key_id, label=label, store=True, public_template=public, private_template=private
            )
        else:
            raise ValueError("key kind must be 'rsa' or 'ec'")
        der = self.public_key_der(label)
        assert der is not None
        return der

    def restrict_to_signing(self, label: str) -> bool:
        """Clear CKA_DECRYPT and CKA_UNWRAP on an existing private key; True if either was set.

        For the CA key of a state directory made before the RA existed: once the
        RA opens the envelopes, the token itself should refuse to decrypt with
        the CA key. PKCS#11 lets both attributes be modified; a token that says
        they are read-only raises, and the caller reports it.
        """
        key = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        if not (key[Attribute.DECRYPT] or key[Attribute.UNWRAP]):
            return False
        key[Attribute.DECRYPT] = False
        key[Attribute.UNWRAP] = False
        self._keys.pop(label, None)
        return True

    def store_certificate(self, label: str, der: bytes) -> None:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        old = self._find(ObjectClass.CERTIFICATE, label)
        if old is not None:
            old.destroy()
        key = self._find(ObjectClass.PRIVATE_KEY, label)
        template = {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.VALUE: der,
            Attribute.SUBJECT: cert.subject.public_bytes(),
            Attribute.ISSUER: cert.issuer.public_bytes(),
            Attribute.SERIAL_NUMBER: cert.serial_number.to_bytes(20, "big").lstrip(b"\0") or b"\0",
        }
        if key is not None:
            template[Attribute.ID] = key[Attribute.ID]
        self.session.create_object(template)

    def load_certificate(self, label: str) -> bytes | None:
        cert = self._find(ObjectClass.CERTIFICATE, label)
        return None if cert is None else bytes(cert[Attribute.VALUE])

    def dispatch(self, op: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        if self._broken:
            locked = self._recover_or_locked()
            if locked is not None:
                return ("backend", locked)
        try:
            if self._stale:
                self._replace_session()
            return ("ok", getattr(self, op)(*args))
        except Unsupported as e:
            return ("unsupported", str(e))
        except pkcs11.exceptions.NoSuchKey:
            return ("backend", f"no private key labelled {args[0]!r} on the token")
        except Exception as e:  # noqa: BLE001 - every other fault is the backend's
            self._broken = self.tpm
            return ("backend", f"{type(e).__name__}: {e}")
