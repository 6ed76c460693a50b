"""The per-key lock table (scepd.locks): one task per key at a time, and no growth."""

from __future__ import annotations

import trio
import trio.testing

from scepd.locks import KeyedLock


async def test_same_key_serialises_other_keys_do_not() -> None:
    table = KeyedLock[str]()
    go = trio.Event()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def use(key: str) -> None:
        async with table.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            assert table.locked(key)
            await go.wait()
            inside[key] -= 1

    async with trio.open_nursery() as nursery:
        for key in "aaabbb":
            nursery.start_soon(use, key)
        await trio.testing.wait_all_tasks_blocked()
        assert len(table) == 2  # one lock per key in use
        assert inside == {"a": 1, "b": 1}  # one holder per key, the others wait
        go.set()
    assert most == {"a": 1, "b": 1}
    assert len(table) == 0 and not table.locked("a")


async def test_a_failing_holder_releases_and_forgets() -> None:
    table = KeyedLock[int]()
    try:
        async with table.hold(7):
            raise ValueError("boom")
    except ValueError:
        pass
    assert len(table) == 0
    with trio.move_on_after(1) as scope:
        async with table.hold(7):
            pass
    assert not scope.cancelled_caught
