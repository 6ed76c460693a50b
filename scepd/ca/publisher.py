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
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from scepd.ca.authority import CertificateAuthority
from scepd.ca.crl import Crl
from scepd.keys.base import KeyBackendError
from scepd.store.base import RevocationState, Store, StoreError

log = logging.getLogger("scepd.crl")

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
        store: Store,
        *,
        lifetime: dt.timedelta = dt.timedelta(hours=24),
        file: Path | None = None,
        check_interval: float = 10.0,
        clock: Clock = _utcnow,
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

    @property
    def current(self) -> Crl | None:
        """The latest CRL, or None before the first `refresh()`."""
        return self._current

    async def get(self) -> Crl:
        """The current CRL, signing the first one if there is none yet."""
        if self._current is None:
            await self.refresh()
        assert self._current is not None
        return self._current

    async def refresh(self) -> None:
        """Sign a new CRL from the store now; waits for a regeneration already running."""
        async with self._lock:
            # The fingerprint is read first: a revocation that lands while we build is
            # then seen as a change by the next check instead of being lost.
            state = await self.store.revocation_state()
            entries = await self.store.revoked_entries()
            number = await self.store.next_crl_number()
            template = self.ca.crl_template(entries, number, self.clock(), self.lifetime)
            crl = await self.ca.sign_crl(template)
            self._current, self._state = crl, state
            try:
                await self.store.save_crl(crl.number, crl.der)
            except StoreError as e:  # the serving processes keep the previous one a while longer
                log.warning("event=crl_store_failed number=%d error=%r", crl.number, str(e))
            log.info("event=crl_published number=%d revoked=%d next_update=%s",
                     crl.number, crl.revoked, crl.next_update.isoformat())
            if self.file is not None:
                try:
                    data = crl.pem if self.file.suffix == ".pem" else crl.der
                    await trio.to_thread.run_sync(write_atomically, self.file, data)
                except OSError as e:
                    # Serving the CRL matters more than the copy; the next regeneration retries.
                    log.warning("event=crl_file_write_failed path=%s error=%r", self.file, str(e))

    def _due(self, crl: Crl) -> dt.datetime:
        """When to re-sign: half way through the lifetime."""
        return crl.this_update + self.lifetime / 2

    async def _changed(self) -> bool:
        return await self.store.revocation_state() != self._state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish a first CRL, then keep it current until cancelled.

        A failed regeneration (token or store fault) is logged and retried at the
        next check; the previous CRL is served meanwhile.
        """
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self._next_check())
            try:
                crl = self._current
                if crl is None or self.clock() >= self._due(crl) or await self._changed():
                    await self.refresh()
            except (KeyBackendError, StoreError) as e:
                log.warning("event=crl_refresh_failed error=%r", str(e))
                await trio.sleep(self.check_interval)

    async def follow(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the CRL the primary process signed; sign one only if the store holds none yet."""
        await self._load()
        if self._current is None:
            await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self.check_interval)
            try:
                await self._load()
            except StoreError as e:
                log.warning("event=crl_load_failed error=%r", str(e))

    async def _load(self) -> None:
        der = await self.store.latest_crl()
        if der is not None:
            crl = Crl.from_der(der)
            if self._current is None or crl.number > self._current.number:
                self._current = crl

    def _next_check(self) -> float:
        """Seconds to the next fingerprint check, or sooner when the CRL falls due."""
        if self._current is None:
            return 0.0
        until_due = (self._due(self._current) - self.clock()).total_seconds()
        return max(0.0, min(self.check_interval, until_due))
