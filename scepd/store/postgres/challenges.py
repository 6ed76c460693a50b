"""`Challenges` on PostgreSQL: one row per minted challenge, by digest."""

from __future__ import annotations

import datetime as dt
import re

from scepd.store.postgres.codecs import encode_time
from scepd.store.postgres.connection import OnDatabase

_DIGEST = re.compile(r"[0-9a-f]{64}")


class PostgresChallenges(OnDatabase):
    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        if not _DIGEST.fullmatch(digest):
            # Guards against storing a plaintext challenge by mistake.
            raise ValueError("expected the lower-case hex SHA-256 digest of the challenge")
        await self.database.execute(
            "INSERT INTO challenges (digest, expires_at, note) VALUES (%s, %s, %s)",
            (digest, encode_time(expires_at), note),
        )

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        at = encode_time(now)
        # The one UPDATE decides: a second node's UPDATE waits for the row lock, then re-reads the
        # row (READ COMMITTED), finds used_at set and changes nothing.
        changed = await self.database.execute(
            "UPDATE challenges SET used_at = %s WHERE digest = %s AND used_at IS NULL AND expires_at > %s",
            (at, digest, at),
        )
        return changed == 1
