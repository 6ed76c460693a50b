"""Exit codes for failures a real SoftHSM2 token cannot produce on demand (SoftHSM2 2.6 never locks a
PIN; the e2e start-up test covers the rest over real `scepd serve` processes)."""

from __future__ import annotations

import errno

import pkcs11.exceptions

from scepd.cli.errors import classify
from scepd.config import ConfigError
from scepd.errors import ExitCode, ListenError
from scepd.keys.pkcs11.config import TokenStartError
from scepd.keys.pkcs11.lock import TokenBusy
from scepd.keys.pkcs11.session import start_failure
from scepd.store.base import StoreError


def _code(e: BaseException) -> ExitCode:
    return classify(e)[0]


def test_a_locked_pin_has_its_own_code() -> None:
    for exc in (
        pkcs11.exceptions.PinLocked(),
        pkcs11.exceptions.PinExpired(),
        pkcs11.exceptions.UserPinNotInitialized(),
    ):
        kind, message = start_failure(exc)
        assert kind == "pin_locked" and "locked" in message
        assert _code(TokenStartError(kind, message)) is ExitCode.PIN_LOCKED


def test_a_module_that_does_not_load_or_a_busy_token_is_a_token_worker_failure() -> None:
    kind, message = start_failure(pkcs11.exceptions.PKCS11Error("OS exception while loading /x.so"))
    assert kind == "module" and "did not load" in message
    assert _code(TokenStartError(kind, message)) is ExitCode.TOKEN_WORKER
    assert _code(TokenStartError(*start_failure(TokenBusy("held")))) is ExitCode.TOKEN_WORKER


def test_the_first_known_cause_in_nested_exception_groups_wins() -> None:
    bind = OSError(errno.EADDRINUSE, "Address already in use")
    group = ExceptionGroup("outer", [RuntimeError("noise"), ExceptionGroup("inner", [bind])])
    assert _code(group) is ExitCode.LISTEN
    assert _code(ExceptionGroup("g", [ListenError("SCEP", "127.0.0.1:1", bind)])) is ExitCode.LISTEN
    assert _code(ExceptionGroup("g", [StoreError("disk I/O error")])) is ExitCode.STORE
    assert _code(ConfigError("server.listen", "must be HOST:PORT")) is ExitCode.CONFIG_INVALID
    assert classify(RuntimeError("boom")) == (ExitCode.FAILURE, "unexpected error: RuntimeError: boom")
