"""The `NodeKeys` role on both backends (the `store` fixture): one row per node, replaced on each
announcement, and only the rows seen since a given time are read back."""

from __future__ import annotations

import datetime as dt
from typing import Any

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


async def test_an_announcement_replaces_the_nodes_row(store: Any) -> None:
    assert await store.fingerprints(T0 - dt.timedelta(days=1)) == []
    await store.announce("node-a", "fp-1", T0)
    await store.announce("node-b", "fp-2", T0)
    await store.announce("node-a", "fp-3", T0 + dt.timedelta(seconds=5))
    rows = await store.fingerprints(T0)
    assert [(r.node, r.fingerprint, r.seen_at) for r in rows] == [
        ("node-a", "fp-3", T0 + dt.timedelta(seconds=5)),
        ("node-b", "fp-2", T0),
    ]
    assert all(r.seen_at.tzinfo is not None for r in rows)


async def test_only_rows_seen_since_are_read(store: Any) -> None:
    await store.announce("old", "fp", T0)
    await store.announce("new", "fp", T0 + dt.timedelta(seconds=10))
    assert [r.node for r in await store.fingerprints(T0 + dt.timedelta(seconds=1))] == ["new"]
    assert [r.node for r in await store.fingerprints(T0)] == ["new", "old"]  # `since` itself counts
    assert await store.fingerprints(T0 + dt.timedelta(seconds=11)) == []
    await store.announce("old", "fp", T0 + dt.timedelta(seconds=20))  # the node speaks again
    assert [r.node for r in await store.fingerprints(T0 + dt.timedelta(seconds=11))] == ["old"]
