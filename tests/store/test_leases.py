"""The `Leases` role on both backends (the `store` fixture), and two PostgreSQL stores racing for one lease."""

from __future__ import annotations

from typing import Any

import trio

from scepd.store.postgres import PostgresStore

SHORT = 0.3  # seconds: long enough for the claims below to run inside it, short enough to wait out


async def test_a_free_lease_is_claimed_and_renewed_by_its_holder(store: Any) -> None:
    assert await store.claim("background", "node-a", 30)
    assert await store.claim("background", "node-a", 30)  # renewal
    assert await store.claim("other", "node-b", 30)  # another name is another lease


async def test_another_holder_is_refused_while_the_lease_is_valid(store: Any) -> None:
    assert await store.claim("background", "node-a", 30)
    assert not await store.claim("background", "node-b", 30)
    assert await store.claim("background", "node-a", 30)  # the refusal changed nothing


async def test_an_expired_lease_is_taken_over(store: Any) -> None:
    assert await store.claim("background", "node-a", SHORT)
    assert not await store.claim("background", "node-b", SHORT)
    await trio.sleep(SHORT + 0.1)
    assert await store.claim("background", "node-b", 30)
    assert not await store.claim("background", "node-a", 30)  # the old holder lost it


async def test_a_renewal_moves_the_expiry_on(store: Any) -> None:
    assert await store.claim("background", "node-a", SHORT)
    for _ in range(4):  # renewed well past the first expiry
        await trio.sleep(SHORT / 3)
        assert await store.claim("background", "node-a", SHORT)
    assert not await store.claim("background", "node-b", SHORT)


async def test_release_lets_another_claim_at_once_and_only_the_holder_releases(store: Any) -> None:
    assert await store.claim("background", "node-a", 30)
    await store.release("background", "node-b")  # not the holder: nothing happens
    assert not await store.claim("background", "node-b", 30)
    await store.release("background", "node-a")
    assert await store.claim("background", "node-b", 30)
    await store.release("nothing-held", "node-a")  # releasing a lease never claimed is harmless


async def test_two_postgres_stores_racing_for_a_lease_exactly_one_wins(postgres_url: str) -> None:
    """Two connections (as two nodes have) claim 40 fresh leases at the same moment, and an expired one."""
    async with PostgresStore.open(postgres_url) as a, PostgresStore.open(postgres_url) as b:

        async def claim(store: PostgresStore, holder: str, name: str, start: trio.Event, won: dict[str, bool]) -> None:
            await start.wait()
            won[holder] = await store.claim(name, holder, 30)

        for round_ in range(40):
            won: dict[str, bool] = {}
            start = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim, a, "node-a", f"race-{round_}", start, won)
                nursery.start_soon(claim, b, "node-b", f"race-{round_}", start, won)
                await trio.sleep(0.01)
                start.set()
            assert sorted(won.values()) == [False, True], won
        # Both take over one expired lease at once: still one winner.
        assert await a.claim("expired", "node-c", SHORT)
        await trio.sleep(SHORT + 0.1)
        results = {}

        async def take(store: PostgresStore, holder: str) -> None:
            results[holder] = await store.claim("expired", holder, 30)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, a, "node-a")
            nursery.start_soon(take, b, "node-b")
        assert sorted(results.values()) == [False, True], results


async def test_postgres_times_the_lease_by_the_server_clock(postgres_url: str) -> None:
    async with PostgresStore.open(postgres_url) as store:
        assert await store.claim("background", "node-a", 12.5)
        row = await store.database.run(
            lambda conn: conn.execute(
                "SELECT extract(epoch FROM expires_at - clock_timestamp()) AS left FROM leases"
            ).fetchone()
        )
        assert row is not None and 11 < float(row["left"]) <= 12.5
