"""`scepd init --token tpm` and the TPM checks of `config check` / `ca init` (docs/keys.md, "TPM").

The embedded default on a TPM 2.0: the tpm2-pkcs11 store in `<state>/tpm2`
(its SQLite database holds the keys wrapped by the TPM, useless without that
chip), the PINs generated into `<state>/secrets` and handed to the token
creation on a pipe, and a config whose [token] names the tpm2-pkcs11 module,
the store and the TCTI. The CA and RA keys are then made by the same code as
on SoftHSM2.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from scepd.keys import tpm

if TYPE_CHECKING:
    from scepd.config import Config

STORE_DIR = "tpm2"
TOKEN_LABEL = "scepd"


def _pin() -> str:
    return secrets.token_urlsafe(15)


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")


def prepare_state(state: Path, tcti: str, module: str = tpm.DEFAULT_MODULE) -> None:
    """Create the TPM token of a state directory once: store directory, PIN files, token.

    Idempotent: a state whose user PIN file exists already has its token. The
    PIN files are written first (0600, never replaced), so an interrupted run
    leaves PINs that match whatever the TPM got, or no token at all.
    """
    store, secret_dir = state / STORE_DIR, state / "secrets"
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    user_file, so_file = secret_dir / "token.pin", secret_dir / "token.so-pin"
    if user_file.exists():
        return
    so_pin, user_pin = _pin(), _pin()
    tmp_user, tmp_so = user_file.with_suffix(".pin.tmp"), so_file.with_suffix(".so-pin.tmp")
    for p in (tmp_user, tmp_so):
        p.unlink(missing_ok=True)
    _write_secret(tmp_user, user_pin)
    _write_secret(tmp_so, so_pin)
    tpm.create_token(TOKEN_LABEL, so_pin, user_pin, module=module, store=str(store), tcti=tcti)
    tmp_so.rename(so_file)
    tmp_user.rename(user_file)


def config_text(default_toml: str, tcti: str, module: str = tpm.DEFAULT_MODULE) -> str:
    """The embedded default's TOML turned to the TPM token: its module, store and TCTI instead of SoftHSM2's."""
    lines = []
    for line in default_toml.splitlines():
        if line.startswith("softhsm2_conf"):
            lines.append(f'tpm2_pkcs11_store = "{STORE_DIR}"')
            lines.append(f'tpm2_tcti = "{tcti}"')
        elif line.startswith("module = "):
            lines.append(f'module = "{module}"')
        elif line.startswith("workers = "):
            # One token thread per serving process: tpm2-pkcs11 is not thread-safe under python-pkcs11,
            # and the TPM, not the CPU, limits the rate (docs/keys.md, "TPM").
            lines.append("workers = 0")
        elif line.startswith("# scepd embedded default: SoftHSM2 token"):
            lines.append(line.replace("SoftHSM2 token", "TPM 2.0 token (tpm2-pkcs11)"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def check_key_spec(kind: str, size: int, curve: str) -> None:
    """`ca init`/`ca csr --generate` on a TPM: refuse a key it cannot make, before anything is made."""
    try:
        tpm.check_key_spec(kind, size, curve)
    except tpm.TpmUnsupported as e:
        raise SystemExit(f"scepd: {e}") from None


def config_problems(config: Config) -> list[str]:
    """What a TPM-backed config names that the TPM cannot hold (RSA-4096, P-521 certificates)."""
    from cryptography import x509

    if not tpm.is_tpm_module(config.token.module):
        return []
    problems = []
    for what, path in (("ca.certificate", config.ca.certificate), ("ca.ra_certificate", config.ca.ra_certificate)):
        if path is None or not path.exists():
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            tpm.check_public_key(what, cert.public_key())
        except tpm.TpmUnsupported as e:
            problems.append(f"{what} ({path}): {e}")
        except ValueError:
            continue  # not a certificate: the daemon's own start-up check says so
    return problems
