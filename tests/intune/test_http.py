"""The Intune HTTP client: many slow calls overlap, spread over small connection pools."""

from __future__ import annotations

import trio

from scepd.intune.http import SHARDS, ShardedTransport, http_client
from tests.support.fake_intune.state import FakeIntune


async def test_slow_calls_overlap_and_spread_over_the_pools(fake_intune: FakeIntune) -> None:
    calls = 4 * SHARDS
    fake_intune.slow("token", 0.3, times=calls)
    async with http_client() as http:
        transport = http._transport
        assert isinstance(transport, ShardedTransport)

        async def one() -> None:
            await http.post(fake_intune.token_url, data={"grant_type": "client_credentials"})

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(one)
        elapsed = trio.current_time() - started
        pools = [len(shard._pool.connections) for shard in transport.shards]  # type: ignore[attr-defined]
    assert elapsed < 0.3 * 3, elapsed  # overlapped, not one after another
    assert len(fake_intune.calls("token")) == calls
    assert max(pools) <= calls // SHARDS + 1 and min(pools) >= 1, pools  # each pool took its share
