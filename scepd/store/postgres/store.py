"""`PostgresStore`: every role on one PostgreSQL database, which several scepd nodes may share.

Each role is its own class over the shared `Database`; this class only puts
them together and owns opening and closing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from scepd.store.postgres.certificates import PostgresCertificates
from scepd.store.postgres.challenges import PostgresChallenges
from scepd.store.postgres.connection import Database
from scepd.store.postgres.counts import PostgresCounts
from scepd.store.postgres.crl import PostgresCrlState
from scepd.store.postgres.health import PostgresHealth
from scepd.store.postgres.intune import PostgresIntuneLedger
from scepd.store.postgres.leases import PostgresLeases
from scepd.store.postgres.nodekeys import PostgresNodeKeys
from scepd.store.postgres.pending import PostgresPendingRequests


class PostgresStore(
    PostgresCertificates,
    PostgresChallenges,
    PostgresPendingRequests,
    PostgresIntuneLedger,
    PostgresCrlState,
    PostgresLeases,
    PostgresNodeKeys,
    PostgresHealth,
    PostgresCounts,
):
    """`Store` on a PostgreSQL database. Open with `async with PostgresStore.open(url) as store`."""

    @property
    def path(self) -> str:
        """Where the store is, for logs: the database named by the URL, without its password."""
        return self.database.location

    @classmethod
    async def connect(cls, url: str, *, connect_later: bool = False) -> PostgresStore:
        """Connect (creating and migrating the schema as needed); the caller must `close()`.

        `connect_later`: a database not reachable yet is connected to (and migrated) by a later call
        (`Database.open`) instead of failing this one."""
        return cls(await Database.open(url, connect_later=connect_later))

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, connect_later: bool = False) -> AsyncIterator[PostgresStore]:
        store = await cls.connect(url, connect_later=connect_later)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    async def close(self) -> None:
        await self.database.close()
