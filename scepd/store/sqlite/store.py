"""`SqliteStore`: every role on one SQLite file in WAL mode, written durably.

Each role is its own class over the shared `Database` (certificates.py,
challenges.py, pending.py, intune.py, crl.py, leases.py, health.py, counts.py); this class only
puts them together and owns opening and closing. A role class also works
alone, on a `Database` of its own, which is how a test can exercise one seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from scepd.store.sqlite.certificates import SqliteCertificates
from scepd.store.sqlite.challenges import SqliteChallenges
from scepd.store.sqlite.connection import Database
from scepd.store.sqlite.counts import SqliteCounts
from scepd.store.sqlite.crl import SqliteCrlState
from scepd.store.sqlite.health import SqliteHealth
from scepd.store.sqlite.intune import SqliteIntuneLedger
from scepd.store.sqlite.leases import SqliteLeases
from scepd.store.sqlite.nodekeys import SqliteNodeKeys
from scepd.store.sqlite.pending import SqlitePendingRequests


class SqliteStore(
    SqliteCertificates,
    SqliteChallenges,
    SqlitePendingRequests,
    SqliteIntuneLedger,
    SqliteCrlState,
    SqliteLeases,
    SqliteNodeKeys,
    SqliteHealth,
    SqliteCounts,
):
    """`Store` on one SQLite file. Open with `async with SqliteStore.open(path) as store`."""

    @property
    def path(self) -> Path:
        return self.database.path

    @classmethod
    async def connect(cls, path: str | Path) -> SqliteStore:
        """Open (creating and migrating as needed); the caller must `close()`."""
        return cls(await Database.open(Path(path)))

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator[SqliteStore]:
        store = await cls.connect(path)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    async def close(self) -> None:
        await self.database.close()
