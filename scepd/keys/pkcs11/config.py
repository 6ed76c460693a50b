"""What opens a token (`TokenConfig`) and how opening it fails: shared by the pool, the
token session and the worker process, without loading any of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from scepd.keys.base import KeyBackendError


@dataclass(frozen=True)
class TokenConfig:
    module: str
    token_label: str
    pin: str = field(repr=False)
    workers: int = 0
    softhsm2_conf: str | None = None
    timeout: float = 30.0  # seconds one token operation may take before its worker is declared hung
    tpm2_pkcs11_store: str | None = None  # tpm2-pkcs11 only: its store directory (TPM2_PKCS11_STORE)
    tpm2_tcti: str | None = None  # tpm2-pkcs11 only: how to reach the TPM (TPM2_PKCS11_TCTI)


class TokenStartError(KeyBackendError):
    """The token could not be opened; `kind` says why (no_token, pin_incorrect, pin_locked, module, busy,
    other), so the CLI can end with the matching exit code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class KeyMissing(KeyBackendError):
    """The configuration names a key the token does not hold."""
