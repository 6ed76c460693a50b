"""How starting the daemon fails, as types: the exit codes an operator (or systemd's
`RestartPreventExitStatus=`) tells causes apart by, and the errors that carry one.

The daemon raises these; the command line (scepd.cli.errors) turns any
failure into one line and its code. The codes are listed in
docs/operations-startup.md; keep the two in step.
"""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # anything not listed below (a bug: run with --log-level debug for the traceback)
    USAGE = 2  # bad command line or argument (argparse uses 2 as well)
    CONFIG_UNREADABLE = 3  # the configuration, or a file or secret it names, cannot be read
    CONFIG_INVALID = 4  # the configuration is not valid
    STORE = 5  # the store cannot be opened
    COPY_REFUSED = 6  # `scepd store copy`: the target database is not empty (nothing was written)
    COPY_MISMATCH = 7  # `scepd store copy`: the target does not hold what was read from the source
    TOKEN_NOT_FOUND = 10  # no token with the configured label
    PIN_INCORRECT = 11
    PIN_LOCKED = 12  # PIN locked, expired or never set: an officer must act
    KEY_MISSING = 13  # a configured key is not on the token, or does not match its certificate
    TOKEN_WORKER = 14  # the token could not be opened otherwise (module does not load, worker, lock, fault)
    LISTEN = 15  # a listening address is in use or cannot be bound


class ListenError(Exception):
    """A listener could not bind its address."""

    def __init__(self, what: str, address: str, error: OSError) -> None:
        super().__init__(f"cannot listen on {address} ({what}): {error.strerror or error}")
        self.error = error


class StartupError(Exception):
    """A start-up failure already classified (`code`) by the code that saw it."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def leaves(e: BaseException) -> list[BaseException]:
    """Every exception in `e`, with Trio's exception groups unwrapped, in order."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


def first_leaf(e: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in `e` or in the groups nested in it."""
    return next((leaf for leaf in leaves(e) if isinstance(leaf, kind)), None)
