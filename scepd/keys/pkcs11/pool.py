"""Keys on a PKCS#11 token, behind the Signer/Decrypter interface.

All calls into the PKCS#11 module of a process go through ONE OS thread (see
scepd.keys.pkcs11.session for why). `TokenConfig.workers` picks the mode:

* 0: a `TokenPool` of one in-process worker, the module's dedicated thread;
* N: N worker processes (fresh interpreters, `python -m
  scepd.keys.pkcs11.worker`, never a fork), each loading the module, logging
  in once and caching key handles; the event loop waits on their sockets
  with `trio.lowlevel.wait_readable`, so it never blocks.

Each call takes an idle worker from a Trio channel; `pool.size`/`pool.busy`
and the TOKEN_WORKERS* gauges follow them. The sync helpers at the end are
for the CLI (never on the event loop).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key

from scepd.keys.base import KeyBackendError
from scepd.keys.pkcs11 import lock as token_lock
from scepd.keys.pkcs11.config import KeyMissing, TokenConfig, TokenStartError
from scepd.keys.pkcs11.key import Pkcs11Key
from scepd.keys.pkcs11.session import TokenSession, start_failure
from scepd.metrics import TOKEN_WORKERS, TOKEN_WORKERS_BUSY

T = TypeVar("T")
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


# --- the in-process thread ----------------------------------------------------------------

_threads: dict[str, ThreadPoolExecutor] = {}
_threads_lock = threading.Lock()


def token_thread(module: str) -> ThreadPoolExecutor:
    """The one thread of this process that may call into `module`."""
    with _threads_lock:
        if module not in _threads:
            _threads[module] = ThreadPoolExecutor(1, thread_name_prefix=f"pkcs11:{os.path.basename(module)}")
        return _threads[module]


async def _wait_future(fut: Future[T]) -> T:
    """Wait for a concurrent.futures.Future without holding a Trio thread."""
    token, done = trio.lowlevel.current_trio_token(), trio.Event()

    def wake(_: Future[T]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    fut.add_done_callback(wake)
    await done.wait()
    return fut.result()


class _ThreadWorker:
    def __init__(self, cfg: TokenConfig) -> None:
        self._cfg, self._exec = cfg, token_thread(cfg.module)
        self._session: TokenSession | None = None

    async def start(self) -> list[tuple[str, str, bytes | None, bool, bool]]:
        def start() -> list[tuple[str, str, bytes | None, bool, bool]]:
            cfg = self._cfg
            with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, cfg.timeout):
                self._session = TokenSession(cfg)
                return self._session.inventory()

        try:
            return await _wait_future(self._exec.submit(start))
        except Exception as e:
            kind, message = start_failure(e)
            raise TokenStartError(kind, f"token {self._cfg.token_label!r}: {message}") from e

    async def call(self, op: str, *args: Any) -> tuple[str, Any]:
        session = self._session
        assert session is not None
        given_up = threading.Event()

        def run() -> tuple[str, Any]:
            if given_up.is_set():  # its caller has answered 503 already; the token has better things to do
                return ("backend", "abandoned after its timeout")
            return session.dispatch(op, args)

        # A token that stops answering (a frozen TPM has no timeout of its own) must not hang the
        # request: the caller gets a backend error after `timeout`; the call still queued is skipped.
        future = self._exec.submit(run)
        try:
            with trio.move_on_after(self._cfg.timeout):
                return await _wait_future(future)
        finally:
            if not future.done():  # timed out here, or the caller was cancelled (a readiness probe's own limit)
                given_up.set()
        raise KeyBackendError(f"token {self._cfg.token_label!r}: no answer to {op} in {self._cfg.timeout:g} s")

    async def stop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await _wait_future(self._exec.submit(session.close))


class _ProcessWorker:
    def __init__(self, cfg: TokenConfig, n: int) -> None:
        self._cfg, self._n = cfg, n
        self._conn: Any = None
        self._proc: Any = None

    async def start(self) -> list[tuple[str, str, bytes | None, bool, bool]]:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        if self._cfg.softhsm2_conf:
            env["SOFTHSM2_CONF"] = self._cfg.softhsm2_conf
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE_ROOT, env.get("PYTHONPATH")]))
        # A fresh interpreter (no fork of this threaded process, no re-import of __main__).
        argv = [sys.executable, "-m", "scepd.keys.pkcs11.worker", str(child.fileno())]
        try:
            proc = await trio.to_thread.run_sync(
                lambda: subprocess.Popen(argv, pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
            )
        finally:
            child.close()
        self._conn, self._proc = Connection(parent.detach()), proc
        self._conn.send(asdict(self._cfg))  # the PIN goes over the socket, never argv or env
        # Starting takes an interpreter, a wait for the token lock (up to `timeout`) and a login:
        # longer than one operation, and the worker's own "token busy" answer must come first.
        status, value = await self._receive(2 * self._cfg.timeout + 10)
        if status == "start":
            await self.stop()
            kind, message = value
            raise TokenStartError(kind, f"token {self._cfg.token_label!r}: {message}")
        if status != "ok":
            await self.stop()
            raise KeyBackendError(value)
        return value  # type: ignore[no-any-return]

    async def _receive(self, timeout: float | None = None) -> tuple[str, Any]:
        timeout = self._cfg.timeout if timeout is None else timeout
        with trio.move_on_after(timeout) as scope:
            await trio.lowlevel.wait_readable(self._conn.fileno())
        try:
            if scope.cancelled_caught:
                raise TimeoutError(f"no answer in {timeout:g} s")
            answer: tuple[str, Any] = self._conn.recv()
        except (EOFError, OSError, TimeoutError) as e:
            await self.stop()  # the next call starts a fresh process
            raise KeyBackendError(f"token worker {self._n} failed: {type(e).__name__}: {e}") from e
        return answer

    async def call(self, op: str, *args: Any) -> tuple[str, Any]:
        if self._proc is None:
            await self.start()
        try:
            self._conn.send((op, args))
        except OSError as e:  # the worker died since its last answer (EPIPE): same as dying mid-call
            await self.stop()  # the next call starts a fresh process
            raise KeyBackendError(f"token worker {self._n} failed: {type(e).__name__}: {e}") from e
        # Once sent, wait for the answer even if cancelled, so the pipe stays in step.
        with trio.CancelScope(shield=True):
            answer = await self._receive()
        return answer

    async def stop(self) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()  # the worker sees EOF and exits
        if proc is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
                if proc.poll() is None:
                    proc.kill()
                    await trio.to_thread.run_sync(proc.wait)


class TokenPool:
    """Token workers shared by every key on one token; `async with TokenPool.open(cfg) as pool`."""

    # A call that succeeded this recently (seconds; the readiness cache period) already shows the
    # token answers, so `ready` does not queue a ping behind the calls in flight: on a busy TPM, where
    # each operation takes tens of milliseconds, /readyz and /metrics would wait behind every enrollment.
    RECENT_OK = 1.0

    # Calls handed to the in-process token thread at once. With one, the thread sat idle from the end
    # of each call until the busy event loop had taken the answer and handed it the next one: on a TPM,
    # the one resource an enrollment waits for, that idle time came off the enrollment rate. Its
    # executor runs them one after the other, so the thread-per-module rule holds.
    THREAD_DEPTH = 2

    def __init__(self, cfg: TokenConfig, workers: list[Any]) -> None:
        self.cfg = cfg
        self._workers = workers
        slots = [w for w in workers for _ in range(self.THREAD_DEPTH if isinstance(w, _ThreadWorker) else 1)]
        self._idle_send, self._idle_recv = trio.open_memory_channel[Any](len(slots))
        for w in slots:
            self._idle_send.send_nowait(w)
        self._calls: dict[int, int] = {}  # calls in flight per worker (by id)
        self._keys: dict[str, Pkcs11Key] = {}
        self.busy = 0  # workers with a call in flight
        self._last_ok: float | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, cfg: TokenConfig) -> AsyncIterator[TokenPool]:
        if cfg.workers < 0:
            raise ValueError("workers must be >= 0")
        workers: list[Any] = (
            [_ThreadWorker(cfg)] if cfg.workers == 0 else [_ProcessWorker(cfg, i) for i in range(cfg.workers)]
        )
        started: list[Any] = []
        inventories: list[Any] = []
        errors: list[Exception] = []
        try:
            async with trio.open_nursery() as nursery:

                async def start(w: Any) -> None:
                    try:
                        inventories.append(await w.start())
                        started.append(w)
                    except KeyBackendError as e:
                        errors.append(e)

                for w in workers:
                    nursery.start_soon(start, w)
            if errors:
                raise errors[0]
            pool = cls(cfg, workers)
            for label, kind, spki, can_sign, can_decrypt in inventories[0]:
                if spki is not None:
                    pool._keys[label] = Pkcs11Key(
                        pool, label, kind, load_der_public_key(spki), can_sign=can_sign, can_decrypt=can_decrypt
                    )
            TOKEN_WORKERS.inc(pool.size)
            try:
                yield pool
            finally:
                TOKEN_WORKERS.dec(pool.size)
        finally:
            with trio.CancelScope(shield=True):
                for w in started:
                    await w.stop()

    @property
    def size(self) -> int:
        return len(self._workers)

    def key(self, label: str) -> Pkcs11Key:
        """The key labelled `label` (private key on the token when the pool opened, with its public key)."""
        try:
            return self._keys[label]
        except KeyError:
            raise KeyMissing(
                f"no private key labelled {label!r} with a public key or certificate on token {self.cfg.token_label!r}"
            ) from None

    def labels(self) -> list[str]:
        return sorted(self._keys)

    async def call(self, op: str, *args: Any, on_start: Callable[[], None] | None = None) -> tuple[str, Any]:
        """Run `op` on an idle worker; returns the worker's (status, value) reply."""
        worker = await self._idle_recv.receive()
        self._calls[id(worker)] = self._calls.get(id(worker), 0) + 1
        if self._calls[id(worker)] == 1:
            self.busy += 1
            TOKEN_WORKERS_BUSY.inc()
        try:
            if on_start is not None:
                on_start()
            reply: tuple[str, Any] = ("error", None)
            try:
                reply = await worker.call(op, *args)
            finally:
                if reply[0] == "ok":
                    self._last_ok = trio.current_time()
                elif reply[0] != "unsupported":  # a token fault, or a call that raised, ends `ready`'s shortcut
                    self._last_ok = None
            return reply
        finally:
            self._calls[id(worker)] -= 1
            if self._calls[id(worker)] == 0:
                self.busy -= 1
                TOKEN_WORKERS_BUSY.dec()
            self._idle_send.send_nowait(worker)

    async def ping(self) -> None:
        """A cheap token round trip (random bytes)."""
        status, value = await self.call("ping")
        if status != "ok":
            raise KeyBackendError(f"token ping failed: {value}")

    async def ready(self) -> None:
        """The readiness check's probe: `ping`, unless a call succeeded within RECENT_OK and none failed since.

        A hung call does not keep this true: the last success ages past RECENT_OK and the ping then waits
        (and times out) behind it, as before."""
        if self._last_ok is not None and trio.current_time() - self._last_ok < self.RECENT_OK:
            return
        await self.ping()


# --- sync helpers for the CLI ----------------------------------------------------------------


def _on_token(cfg: TokenConfig, op: Callable[[TokenSession], T]) -> T:
    """Run `op` in a fresh session, holding the token lock throughout: the CLI's operations
    (key generation, certificate storage) write token files a starting daemon reads."""

    def run() -> T:
        with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, cfg.timeout):
            session = TokenSession(cfg)
            try:
                return op(session)
            finally:
                session.close()

    return token_thread(cfg.module).submit(run).result()


def generate_key(
    cfg: TokenConfig, label: str, kind: str, size: int = 3072, curve: str = "P-256", *, decrypt: bool = False
) -> PublicKeyTypes:
    """Generate a key pair ON the token (sensitive, not extractable); refuses an existing label.

    Sign-only unless `decrypt`: only a key that exists to open envelopes (an RA) gets CKA_DECRYPT.
    """
    return load_der_public_key(_on_token(cfg, lambda s: s.generate(label, kind, size, curve, decrypt)))


def restrict_to_signing(cfg: TokenConfig, label: str) -> bool:
    """Make an existing key sign-only on the token (CKA_DECRYPT, CKA_UNWRAP false); True if it changed."""
    return _on_token(cfg, lambda s: s.restrict_to_signing(label))


def find_public_key(cfg: TokenConfig, label: str) -> PublicKeyTypes | None:
    der = _on_token(cfg, lambda s: s.public_key_der(label))
    return None if der is None else load_der_public_key(der)


def key_exists(cfg: TokenConfig, label: str) -> bool:
    return _on_token(cfg, lambda s: s.exists(label))


def store_certificate(cfg: TokenConfig, label: str, der: bytes) -> None:
    """Store (or replace) the certificate labelled `label`, with its key's CKA_ID."""
    _on_token(cfg, lambda s: s.store_certificate(label, der))


def load_certificate(cfg: TokenConfig, label: str) -> bytes | None:
    return _on_token(cfg, lambda s: s.load_certificate(label))


def ensure_reject_secret(cfg: TokenConfig, label: str) -> bool:
    """Give the envelope key `label` its implicit-rejection secret on the token; True if one was created."""
    return _on_token(cfg, lambda s: s.ensure_reject_secret(label))


__all__ = [
    "TokenPool",
    "generate_key",
    "restrict_to_signing",
    "find_public_key",
    "key_exists",
    "store_certificate",
    "load_certificate",
    "ensure_reject_secret",
    "token_thread",
]
