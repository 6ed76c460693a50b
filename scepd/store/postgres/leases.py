"""`Leases` on PostgreSQL: one row per lease name, timed by the server's clock.

Every node asks the same server what time it is (`clock_timestamp()`, read when the statement runs,
after any wait for the row lock), so clock skew between the nodes cannot make two of them believe
they hold one lease.
"""

from __future__ import annotations

from scepd.store.postgres.connection import Conn, OnDatabase


class PostgresLeases(OnDatabase):
    async def claim(self, name: str, holder: str, seconds: float) -> bool:
        if seconds <= 0:
            raise ValueError("a lease lasts a positive number of seconds")

        def take(conn: Conn) -> bool:
            # Two nodes inserting at once: the second waits on the key, then takes the DO UPDATE path,
            # whose WHERE is evaluated on the row the first committed (READ COMMITTED), so only one wins.
            row = conn.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at)"
                " VALUES (%s, %s, clock_timestamp(), clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at"
                " ELSE excluded.acquired_at END"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()"
                " RETURNING holder",
                (name, holder, float(seconds)),
            ).fetchone()
            return row is not None

        return await self.database.write(take)

    async def release(self, name: str, holder: str) -> None:
        await self.database.execute("DELETE FROM leases WHERE name = %s AND holder = %s", (name, holder))
