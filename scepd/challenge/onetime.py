"""Single-use challenges: minted by an admin, valid once, until they expire.

Only the SHA-256 of a challenge is stored, so a copy of the database does not
hand out enrollments. A plain hash suffices: the challenges are 192 random
bits, not guessable passwords.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import replace

from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.scep.constants import FailInfo
from scepd.store.roles import Challenges


def challenge_digest(secret: str) -> str:
    """What the store keeps of a challenge: lower-case hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


async def mint_challenge(store: Challenges, now: dt.datetime, ttl: dt.timedelta, note: str = "") -> str:
    """Store a new challenge (hashed) valid for `ttl` from `now`; return the plaintext, once."""
    if ttl <= dt.timedelta(0):
        raise ValueError("ttl must be positive")
    secret = secrets.token_urlsafe(24)
    await store.add_challenge(challenge_digest(secret), now + ttl, note)
    return secret


class OneTimeChallenge:
    """Accept a request whose challengePassword is an unused, unexpired minted challenge.

    The challenge is spent before issuance: if signing then fails, the client
    needs a new one. The other order would let two concurrent requests share
    one challenge.
    """

    def __init__(self, store: Challenges) -> None:
        self.store = store

    def applies(self, enrollment: Enrollment) -> bool:
        return True

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        password = enrollment.challenge_password
        if password is None:
            raise Rejected(FailInfo.BAD_REQUEST, "challenge password missing")
        if not await self.store.consume_challenge(challenge_digest(password), enrollment.now):
            # One reason for all three: unknown, used and expired look the same to a guesser.
            raise Rejected(FailInfo.BAD_REQUEST, "challenge password unknown, already used or expired")
        return await next(replace(enrollment, challenge_mode="onetime"))
