"""`StoreHealth` on PostgreSQL: this process's fault state, and a one-row write probe."""

from __future__ import annotations

import trio

from scepd.clock import utc_now
from scepd.store.base import StoreError
from scepd.store.postgres.codecs import encode_time
from scepd.store.postgres.connection import OnDatabase

# Seconds: a write that committed this recently, with no fault since, is as good a proof as the probe's own.
RECENT_COMMIT = 1.0


class PostgresHealth(OnDatabase):
    @property
    def fault(self) -> StoreError | None:
        return self.database.fault

    async def ping(self) -> None:
        """Commit a one-row write: proves this node reaches a primary that takes writes.

        Skipped while another write committed within RECENT_COMMIT and none failed since, as in the
        SQLite store. Every node probes the same row: the probes serialise on its lock, briefly."""
        last = self.database.last_commit
        if last is not None and trio.current_time() - last < RECENT_COMMIT:
            return
        await self.database.execute(
            "INSERT INTO health (id, checked_at) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            (encode_time(utc_now()),),
        )
