"""`Challenges` on SQLite: one row per minted challenge, by digest."""

from __future__ import annotations

import datetime as dt
import re

from scepd.store.sqlite.codecs import encode_time
from scepd.store.sqlite.connection import OnDatabase

_DIGEST = re.compile(r"[0-9a-f]{64}")


class SqliteChallenges(OnDatabase):
    async def add_challenge(self, digest: str, expires_at: dt.datetime, note: str = "") -> None:
        if not _DIGEST.fullmatch(digest):
            # Guards against storing a plaintext challenge by mistake.
            raise ValueError("expected the lower-case hex SHA-256 digest of the challenge")
        await self.database.execute(
            "INSERT INTO challenges (digest, expires_at, note) VALUES (?, ?, ?)",
            (digest, encode_time(expires_at), note),
        )

    async def consume_challenge(self, digest: str, now: dt.datetime) -> bool:
        at = encode_time(now)
        # The one UPDATE decides: a second caller finds used_at set and changes no row.
        changed = await self.database.execute(
            "UPDATE challenges SET used_at = ? WHERE digest = ? AND used_at IS NULL AND expires_at > ?",
            (at, digest, at),
        )
        return changed == 1
