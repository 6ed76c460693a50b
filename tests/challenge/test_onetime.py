from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3

import pytest
import trio

from scepd.challenge.onetime import OneTimeChallenge, challenge_digest, mint_challenge
from scepd.enroll.pipeline import Rejected
from scepd.scep.constants import FailInfo
from scepd.store.sqlite import SqliteStore
from tests.support.pki import NOW, Terminal, csr, enrollment, key, self_signed

TTL = dt.timedelta(hours=1)


def request(challenge: str | None, now: dt.datetime = NOW):  # type: ignore[no-untyped-def]
    k = key()
    return enrollment(
        csr(k, "device", challenge.encode() if challenge is not None else None), self_signed(k, "device"), now=now
    )


def test_challenge_digest_is_hex_sha256_of_utf8() -> None:
    assert challenge_digest("ä") == hashlib.sha256("ä".encode()).hexdigest()
    assert len(challenge_digest("x")) == 64


async def test_minted_challenge_is_stored_only_as_digest(store: SqliteStore) -> None:
    secret = await mint_challenge(store, NOW, TTL, note="for laptop 12")
    assert len(secret) >= 32  # token_urlsafe(24): 192 bits
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT digest, expires_at, note FROM challenges").fetchall()
    assert rows == [(challenge_digest(secret), "2025-06-01T13:00:00.000000Z", "for laptop 12")]
    assert secret not in repr(rows)
    assert await mint_challenge(store, NOW, TTL) != secret


async def test_mint_refuses_non_positive_ttl(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        await mint_challenge(store, NOW, dt.timedelta(0))


async def test_minted_challenge_is_accepted_once(store: SqliteStore, terminal: Terminal) -> None:
    secret = await mint_challenge(store, NOW, TTL)
    step = OneTimeChallenge(store)
    await step(request(secret), terminal)
    assert terminal.modes == ["onetime"]
    with pytest.raises(Rejected) as info:
        await step(request(secret), terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert secret not in info.value.reason
    assert len(terminal.seen) == 1


async def test_expired_challenge_is_rejected(store: SqliteStore, terminal: Terminal) -> None:
    secret = await mint_challenge(store, NOW, TTL)
    with pytest.raises(Rejected) as info:
        await OneTimeChallenge(store)(request(secret, now=NOW + TTL + dt.timedelta(seconds=1)), terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert terminal.seen == []


@pytest.mark.parametrize("challenge", [None, "never-minted"])
async def test_missing_or_unknown_challenge_is_rejected(
    store: SqliteStore, terminal: Terminal, challenge: str | None
) -> None:
    with pytest.raises(Rejected) as info:
        await OneTimeChallenge(store)(request(challenge), terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert "never-minted" not in info.value.reason
    assert terminal.seen == []


async def test_concurrent_requests_with_one_challenge_issue_once(store: SqliteStore, terminal: Terminal) -> None:
    secret = await mint_challenge(store, NOW, TTL)
    step = OneTimeChallenge(store)
    rejected = 0

    async def attempt() -> None:
        nonlocal rejected
        try:
            await step(request(secret), terminal)
        except Rejected:
            rejected += 1

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(attempt)
    assert (len(terminal.seen), rejected) == (1, 9)
