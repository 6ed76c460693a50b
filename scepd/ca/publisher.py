"""Keep one current CRL: regenerated after revocations and well before it expires.

The publisher holds the latest signed CRL for the HTTP endpoint and GetCRL,
and (optionally) a copy on disk. It signs a new one

- when asked (`refresh()`, after a revocation made in this process),
- when half the CRL's lifetime has passed, so relying parties never hold an
  expired one, and
- when the store's revoked set changed behind its back (`scepd cert revoke`
  runs in another process, and so may a second node): a cheap fingerprint is
  compared every `check_interval` seconds.

Regenerations never overlap (a `trio.Lock`); each takes a fresh CRL number
from the store, so numbers stay monotonic across restarts and processes.

Each signed CRL is also kept in the store. With `server.processes` above 1,
only the primary process signs (`run`); the serving processes beside it
`follow`: they serve the stored CRL and re-read it every `check_interval`.
With several nodes on one store, only the leading node's primary runs `run`;
the others' primaries `follow`, and switch when the lease changes hands
(scepd.leadership).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

import trio
from cryptography import x509

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.ca.crl import Crl
from scepd.clock import Clock, utc_now
from scepd.keys.base import KeyBackendError
from scepd.logs import event
from scepd.store.base import RevocationState, StoreError
from scepd.store.roles import CrlState

log = logging.getLogger("scepd.crl")

MAX_BACKOFF = 300.0  # seconds between retries at most, however long a fault lasts
FIRST_CRL_WAIT = 1.0  # seconds start-up waits for a first CRL when the store holds none


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class CrlPublisher:
    def __init__(
        self,
        ca: CertificateAuthority,
        store: CrlState,
        *,
        lifetime: dt.timedelta = dt.timedelta(hours=24),
        file: Path | None = None,
        check_interval: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        if lifetime <= dt.timedelta(0):
            raise ValueError("the CRL lifetime must be positive")
        if check_interval <= 0:
            raise ValueError("check_interval must be positive")
        self.ca = ca
        self.store = store
        self.lifetime = lifetime
        self.file = file
        self.check_interval = check_interval
        self.clock = clock
        self._lock = trio.Lock()
        self._current: Crl | None = None
        self._state: RevocationState | None = None  # the revoked set `_current` was built from
        self._published = trio.Event()  # set by the first CRL this publisher signs

    @property
    def current(self) -> Crl | None:
        """The latest CRL, or None before the first one is loaded or signed."""
        return self._current

    async def get(self) -> Crl:
        """The current CRL, signing the first one if there is none yet (or waiting for the one being signed)."""
        if self._current is None:
            async with self._lock:
                if self._current is None:
                    await self._build()
        assert self._current is not None
        return self._current

    async def refresh(self) -> None:
        """Sign a new CRL from the store now; waits for a regeneration already running."""
        async with self._lock:
            await self._build()

    async def _build(self) -> None:
        started = time.perf_counter()
        # The fingerprint is read first: a revocation that lands while we build is
        # then seen as a change by the next check instead of being lost.
        state = await self.store.revocation_state()
        now = self.clock()
        # RFC 5280 5.1.2.6 lets an entry go once it has appeared on one regularly scheduled CRL
        # issued after the certificate expired. CRLs are re-signed at least every lifetime / 2, so
        # every certificate expired for a whole lifetime has been on such a CRL already.
        entries = await self.store.revoked_entries(valid_after=now - self.lifetime)
        number = await self.store.next_crl_number()
        template = self.ca.crl_template(entries, number, now, self.lifetime)
        crl = await self.ca.sign_crl(template)
        self._current, self._state = crl, state
        self._published.set()
        seconds = time.perf_counter() - started
        metrics.CRL_BUILD_SECONDS.set(seconds)
        metrics.CRL_ENTRIES.set(crl.revoked)
        try:
            await self.store.save_crl(crl.number, crl.der)
        except StoreError as e:  # the serving processes keep the previous one a while longer
            event(log, logging.WARNING, "crl_store_failed", number=crl.number, error=str(e))
        event(
            log,
            logging.INFO,
            "crl_published",
            number=crl.number,
            revoked=crl.revoked,
            bytes=len(crl.der),
            seconds=f"{seconds:.3f}",
            next_update=crl.next_update.isoformat(),
        )
        if self.file is not None:
            try:
                data = crl.pem if self.file.suffix == ".pem" else crl.der
                await trio.to_thread.run_sync(write_atomically, self.file, data)
            except OSError as e:
                # Serving the CRL matters more than the copy; the next regeneration retries.
                event(log, logging.WARNING, "crl_file_write_failed", path=self.file, error=str(e))

    def _due(self, crl: Crl) -> dt.datetime:
        """When to re-sign: half way through the lifetime."""
        return crl.this_update + self.lifetime / 2

    async def _changed(self) -> bool:
        return await self.store.revocation_state() != self._state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the CRL kept in the store at once, sign a fresh one, then keep it current until cancelled.

        Start-up does not wait for the fresh CRL: with a large store that takes
        a while, and the stored one is still valid (or, for a store that holds
        none, `get()` waits for the first). A failed regeneration (token, store
        or anything else) is logged once per episode, counted, and retried with
        backoff; the previous CRL is served meanwhile. Nothing here ends the daemon.
        """
        await self._load_quietly()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_current)
            if self._current is None:
                # Nothing stored (a new store, or one from before the CRL was kept): a small store
                # signs its first CRL in milliseconds, so wait that long rather than answer 503 for
                # the CRL; a large one goes on signing after start-up.
                with trio.move_on_after(FIRST_CRL_WAIT):
                    await self._published.wait()
            task_status.started()

    async def _keep_current(self) -> None:
        retry = _Retry(self.check_interval, "crl_refresh")
        first = True  # a fresh CRL at start-up, whatever is stored
        while True:
            try:
                crl = self._current
                if first or crl is None or self.clock() >= self._due(crl) or await self._changed():
                    await self.refresh()
                first = False
                retry.succeeded()
                delay = self._next_check()
            except Exception as e:  # noqa: BLE001 - no fault of one regeneration may end the daemon
                delay = retry.failed(e)
            await trio.sleep(delay)

    async def follow(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the CRL the primary process signed; sign one only if the store still holds none after
        a whole `check_interval` (the primary of a large store may still be signing its first)."""
        await self._load_quietly()
        task_status.started()
        retry = _Retry(self.check_interval, "crl_load")
        waited = 0.0
        while True:
            try:
                await self._load()
                if self._current is None and waited >= self.check_interval:
                    await self.get()
                retry.succeeded()
                delay = self.check_interval if self._current is not None else min(1.0, self.check_interval)
            except Exception as e:  # noqa: BLE001
                delay = retry.failed(e)
            waited += delay
            await trio.sleep(delay)

    async def _load_quietly(self) -> None:
        """The stored CRL, if any; a fault here only means starting without one."""
        try:
            await self._load()
        except Exception as e:  # noqa: BLE001
            event(log, logging.WARNING, "crl_load_failed", error=str(e))

    async def _load(self) -> None:
        der = await self.store.latest_crl()
        if der is None or (self._current is not None and der == self._current.der):
            return  # nothing new: a follower asks every check_interval
        # A CRL of several MB: parse and verify off the event loop.
        crl = await trio.to_thread.run_sync(_ours, der, self.ca)
        if crl is not None and (self._current is None or crl.number > self._current.number):
            self._current = crl

    def _next_check(self) -> float:
        """Seconds to the next fingerprint check, or sooner when the CRL falls due."""
        if self._current is None:
            return 0.0
        until_due = (self._due(self._current) - self.clock()).total_seconds()
        return max(0.0, min(self.check_interval, until_due))


def _ours(der: bytes, ca: CertificateAuthority) -> Crl | None:
    """`der` as a Crl if this CA signed it (a store carried over from an earlier CA may hold another's)."""
    try:
        parsed = x509.load_der_x509_crl(der)
        if parsed.issuer != ca.certificate.subject or not parsed.is_signature_valid(ca.certificate.public_key()):  # type: ignore[arg-type]
            event(log, logging.WARNING, "crl_stored_ignored", reason="not signed by this CA")
            return None
        return Crl.from_der(der)
    except ValueError as e:
        event(log, logging.WARNING, "crl_stored_ignored", reason=str(e))
        return None


def _cause(e: BaseException) -> str:
    leaf = e
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    if isinstance(leaf, KeyBackendError):
        return "token"
    if isinstance(leaf, StoreError):
        return "store"
    return "other"


class _Retry:
    """One fault episode of a background loop: logged when it starts and when it ends, every failure
    counted, the pause doubling from `interval` up to MAX_BACKOFF."""

    def __init__(self, interval: float, event: str) -> None:
        self.interval, self.event, self.failures = interval, event, 0

    def failed(self, e: BaseException) -> float:
        cause = _cause(e)
        metrics.CRL_REFRESH_FAILURES.labels(cause).inc()
        self.failures += 1
        delay = min(self.interval * 2 ** (self.failures - 1), max(MAX_BACKOFF, self.interval))
        if self.failures == 1:
            # An unexpected fault ("other") is a bug: its traceback once, for the report.
            event(
                log,
                logging.WARNING,
                f"{self.event}_failed",
                cause=cause,
                error=f"{type(e).__name__}: {e}",
                retry_in=f"{delay:.1f}",
                exc_info=cause == "other",
            )
        else:
            event(
                log, logging.DEBUG, f"{self.event}_failed", cause=cause, attempt=self.failures, retry_in=f"{delay:.1f}"
            )
        return float(delay)

    def succeeded(self) -> None:
        if self.failures:
            event(log, logging.INFO, f"{self.event}_recovered", failures=self.failures)
            self.failures = 0
