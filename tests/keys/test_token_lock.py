"""The SoftHSM2 token lock (scepd/keys/pkcs11/lock.py): every way scepd opens the token waits for it.

Why it exists is measured, not asserted here (bench/token_contention.py: logins of processes that
open one SoftHSM2 token together fail now and then without it); these tests show that a token worker
process, the in-process token thread and the CLI helpers all take it, and that waiting is bounded."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
import trio

from scepd.cli.errors import classify
from scepd.errors import ExitCode
from scepd.keys.pkcs11 import lock as token_lock
from scepd.keys.pkcs11.config import TokenConfig, TokenStartError
from scepd.keys.pkcs11.lock import TokenBusy
from scepd.keys.pkcs11.pool import TokenPool, key_exists


@contextmanager
def held(cfg: TokenConfig) -> Iterator[str]:
    """The lock taken by someone else (a plain flock on its own descriptor, as another process would)."""
    path = token_lock.lock_path(cfg.module, cfg.softhsm2_conf)
    assert path is not None and os.path.dirname(path) == token_lock.softhsm_token_dir(cfg.module, cfg.softhsm2_conf)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def _open_pool(cfg: TokenConfig) -> None:
    async def run() -> None:
        async with TokenPool.open(cfg):
            pass

    trio.run(run)


@pytest.mark.parametrize("workers", [0, 1])
def test_opening_the_token_waits_while_another_process_holds_the_lock(
    token_config: Callable[..., TokenConfig], workers: int
) -> None:
    cfg = token_config(workers)
    done = threading.Event()
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            _open_pool(cfg)
            key_exists(cfg, "no-such-label")  # the CLI helpers take it too
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        done.set()

    with held(cfg):
        thread = threading.Thread(target=open_it)
        thread.start()
        assert not done.wait(1.0), errors  # no login while the lock is held
    assert done.wait(30)
    thread.join()
    assert not errors


@pytest.mark.parametrize("workers", [0, 1])
def test_a_lock_held_too_long_ends_start_up_with_the_token_worker_code(
    token_config: Callable[..., TokenConfig], workers: int
) -> None:
    cfg = replace(token_config(workers), timeout=0.5)
    with held(cfg):
        started = time.monotonic()
        with pytest.raises(TokenStartError) as raised:
            _open_pool(cfg)
        assert time.monotonic() - started < 10
    assert raised.value.kind == "busy" and "held the token lock" in str(raised.value)
    assert classify(raised.value)[0] is ExitCode.TOKEN_WORKER


def test_the_lock_is_re_entrant_for_one_thread_and_bounded_for_others(
    token_config: Callable[..., TokenConfig],
) -> None:
    cfg = replace(token_config(), timeout=0.5)
    with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, 1.0):
        with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, 1.0):
            pass
        # The CLI helpers run on the token thread: while this thread holds the lock they wait, then give up.
        with pytest.raises(TokenBusy):
            key_exists(cfg, "no-such-label")
    # The helper holds the lock around a session that takes it again on the same thread.
    assert key_exists(cfg, "no-such-label") is False


def test_only_softhsm2_gets_a_lock(tmp_path: os.PathLike[str]) -> None:
    assert token_lock.lock_path("/usr/lib/x86_64-linux-gnu/libykcs11.so") is None
    conf = os.path.join(tmp_path, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write("# comment\ndirectories.tokendir = /var/lib/softhsm/tokens/\nobjectstore.backend = file\n")
    assert token_lock.lock_path("/usr/lib/softhsm/libsofthsm2.so", conf) == "/var/lib/softhsm/tokens/.scepd.lock"
