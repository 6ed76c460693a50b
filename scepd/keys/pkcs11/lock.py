"""Several processes on one SoftHSM2 token directory: an advisory lock around what rewrites its files.

SoftHSM2 (2.6.1, checked with strace) keeps a token as plain files and
rewrites them in place. Every C_Login rewrites `token.object` (it clears the
PIN-count-low flag): the file is truncated under SoftHSM2's fcntl lock, the
lock is released, and only then is the new content written. C_Initialize
rewrites the token's `generation` file the same way, and key generation or
certificate storage write object files. A second process that reads in that
window (its own C_Initialize, C_GetTokenInfo or C_Login) sees an empty file:
the slot shows no token (NoSuchToken) or the login fails (GeneralError).

bench/token_contention.py shows logins failing without this lock and none
with it (docs/benchmarks.md). Signing and decrypting read no token file, so
they take no lock.

So every scepd process holds an exclusive `flock` on `<tokendir>/.scepd.lock`
while it loads the module, finds the token and logs in, and while it writes
token objects. SoftHSM2 ignores plain files in its token directory. Other
PKCS#11 modules (real HSMs) do their own locking and get no lock here.

The lock is re-entrant within a process (the CLI holds it around a whole
token operation that opens a session inside), and waiting for it is bounded.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from scepd.keys.base import KeyBackendError
from scepd.logs import event

log = logging.getLogger("scepd.token")

LOCK_NAME = ".scepd.lock"
_DEFAULT_CONF = "/etc/softhsm/softhsm2.conf"

_guard = threading.RLock()
_held: dict[str, list[int]] = {}  # lock path -> [fd, depth], while this process holds it
_warned: set[str] = set()


class TokenBusy(KeyBackendError):
    """Another process held the token lock longer than the wait allowed."""


def softhsm_token_dir(module: str, softhsm2_conf: str | None = None) -> str | None:
    """The `directories.tokendir` of a SoftHSM2 module, or None for any other module."""
    if "softhsm" not in os.path.basename(module).lower():
        return None
    conf = softhsm2_conf or os.environ.get("SOFTHSM2_CONF") or _DEFAULT_CONF
    try:
        with open(conf, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None  # SoftHSM2 itself will fail to start and say so
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "directories.tokendir":
            return value.strip() or None
    return None


def lock_path(module: str, softhsm2_conf: str | None = None) -> str | None:
    directory = softhsm_token_dir(module, softhsm2_conf)
    return None if directory is None else os.path.join(directory, LOCK_NAME)


def _open(path: str) -> int | None:
    try:
        # Read-only is enough for flock, and lets a daemon lock a file an admin (root) created.
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if path not in _warned:
            _warned.add(path)
            event(log, logging.WARNING, "token_lock_unavailable", path=path, error=e.strerror)
        return None


@contextmanager
def exclusive(module: str, softhsm2_conf: str | None = None, timeout: float = 30.0) -> Iterator[None]:
    """Hold the token directory's lock (no-op for modules other than SoftHSM2)."""
    path = lock_path(module, softhsm2_conf)
    if path is None:
        yield
        return
    # One thread of this process at a time, re-entrant for that thread; bounded like the flock.
    deadline = time.monotonic() + timeout
    if not _guard.acquire(timeout=max(timeout, 0.0)):
        raise TokenBusy(f"another thread of this process has held the token lock {path} for more than {timeout:g} s")
    try:
        held = _held.get(path)
        if held is not None:
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        fd = _open(path)
        if fd is None:  # unlocked is how scepd ran before; better than not starting
            yield
            return
        try:
            _acquire(fd, path, deadline - time.monotonic(), timeout)
            _held[path] = [fd, 1]
            try:
                yield
            finally:
                del _held[path]
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        _guard.release()


def _acquire(fd: int, path: str, remaining: float, timeout: float) -> None:
    deadline = time.monotonic() + remaining
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            raise TokenBusy(f"another process has held the token lock {path} for more than {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
