"""`StoreHealth` on SQLite: the fault state of the shared connection, and a one-row write probe."""

from __future__ import annotations

import trio

from scepd.clock import utc_now
from scepd.store.base import StoreError
from scepd.store.sqlite.codecs import encode_time
from scepd.store.sqlite.connection import OnDatabase

# Seconds: a write that committed this recently, with no fault since, is as good a proof as the probe's own.
RECENT_COMMIT = 1.0


class SqliteHealth(OnDatabase):
    @property
    def fault(self) -> StoreError | None:
        return self.database.fault

    async def ping(self) -> None:
        """Commit a one-row write: proves the file is writable and the lock obtainable.

        Skipped while another write committed within RECENT_COMMIT and none failed since: under load
        the probe would only queue behind those writes (and their fsyncs) to prove the same thing. A
        hung write does not keep this true: the last commit ages, and the probe then waits behind it
        (and the readiness check times out)."""
        last = self.database.last_commit
        if last is not None and trio.current_time() - last < RECENT_COMMIT:
            return
        await self.database.execute(
            "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
            (encode_time(utc_now()),),
        )
