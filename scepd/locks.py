"""One lock per key (a transactionID, a certificate serial, a token scope), made on first use
and forgotten when its last holder or waiter leaves, so the table holds only keys in use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)


class KeyedLock(Generic[K]):
    """`async with table.hold(key)`: tasks with the same key run one at a time, others freely."""

    def __init__(self) -> None:
        self._locks: dict[K, trio.Lock] = {}
        self._users: dict[K, int] = {}

    def locked(self, key: K) -> bool:
        """Whether some task holds `key` now."""
        lock = self._locks.get(key)
        return lock is not None and lock.locked()

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, trio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
