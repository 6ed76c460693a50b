"""What a failed `scepd` command prints and exits with.

An operator (or systemd, through `RestartPreventExitStatus=`) must tell a
wrong PIN from a port in use without reading a traceback: each start-up
failure ends with ONE line naming the cause and its own exit code. The codes
are listed in docs/operations-startup.md; keep the two in step.
"""

from __future__ import annotations

import errno
import sys
import traceback

from scepd.config import ConfigError
from scepd.errors import ExitCode, ListenError, StartupError, leaves
from scepd.keys.base import KeyBackendError
from scepd.store.base import StoreError

_TOKEN_KINDS = {
    "no_token": ExitCode.TOKEN_NOT_FOUND,
    "module": ExitCode.TOKEN_WORKER,
    "pin_incorrect": ExitCode.PIN_INCORRECT,
    "pin_locked": ExitCode.PIN_LOCKED,
}
_UNREADABLE = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR)
_BIND = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def classify_one(e: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one line for one (non-group) exception."""
    from scepd.keys.pkcs11.config import KeyMissing, TokenStartError
    from scepd.store.copy import CopyMismatch, CopyRefused

    if isinstance(e, StartupError):
        return e.code, str(e)
    if isinstance(e, ListenError):
        return ExitCode.LISTEN, str(e)
    if isinstance(e, ConfigError):
        if e.reason == "file not found":
            return ExitCode.CONFIG_UNREADABLE, f"cannot read the configuration {e.key}: file not found"
        return ExitCode.CONFIG_INVALID, f"invalid configuration: {e}"
    if isinstance(e, TokenStartError):
        return _TOKEN_KINDS.get(e.kind, ExitCode.TOKEN_WORKER), str(e)
    if isinstance(e, KeyMissing):
        return ExitCode.KEY_MISSING, str(e)
    if isinstance(e, KeyBackendError):
        return ExitCode.TOKEN_WORKER, f"token: {e}"
    if isinstance(e, CopyRefused):
        return ExitCode.COPY_REFUSED, str(e)
    if isinstance(e, CopyMismatch):
        return ExitCode.COPY_MISMATCH, str(e)
    if isinstance(e, StoreError):
        return ExitCode.STORE, f"store: {e}"
    if isinstance(e, OSError):
        if e.filename is not None and e.errno in _UNREADABLE:
            return ExitCode.CONFIG_UNREADABLE, f"cannot read {e.filename}: {e.strerror}"
        if e.filename is None and e.errno in _BIND:
            return ExitCode.LISTEN, f"cannot listen: {e.strerror}"
    if isinstance(e, (ValueError, FileExistsError)):
        return ExitCode.USAGE, str(e)
    return ExitCode.FAILURE, f"unexpected error: {type(e).__name__}: {e}"


def classify(e: BaseException) -> tuple[ExitCode, str]:
    """Unwrap Trio's exception groups; the first leaf with a known cause wins."""
    found = [classify_one(leaf) for leaf in leaves(e)]
    for code, message in found:
        if code is not ExitCode.FAILURE:
            return code, message
    return found[0]


def report(e: BaseException, *, debug: bool) -> int:
    """Print the one line (the traceback first with `debug`) and return the exit code."""
    code, message = classify(e)
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    print(f"scepd: {message} (exit {int(code)})", file=sys.stderr, flush=True)
    return int(code)
