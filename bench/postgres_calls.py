"""Cost of one call to the PostgreSQL store, seen from the scepd process.

    flock /work/wt/bench.lock .venv/bin/python -m bench.postgres_calls [-n 3000]

Starts a private server (tests/support/postgres.py, unix socket), then times
back-to-back `SELECT 1` reads on the write connection and `put_issued`
transactions, one at a time: wall time and this process's CPU time per call
(all its threads, so the store's connection thread and watchdog count; the
server's CPU does not). Run it with PYTHONPATH pointing at another checkout's
scepd to compare two versions of the backend.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Awaitable, Callable

import trio

import scepd
from scepd.store.postgres import PostgresStore
from tests.store.test_sqlite import record
from tests.support.postgres import postgres_server


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_call(n: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Microseconds of wall and CPU time per call, over n calls."""
    cpu, wall = _cpu(), time.perf_counter()
    for i in range(n):
        await call(i)
    return (time.perf_counter() - wall) / n * 1e6, (_cpu() - cpu) / n * 1e6


async def run(url: str, n: int) -> None:
    async with PostgresStore.open(url) as store:

        async def select(_: int) -> object:
            return await store.database.run(lambda conn: conn.execute("SELECT 1").fetchone())

        await _per_call(200, select)  # connections warm, statements prepared
        wall, cpu = await _per_call(n, select)
        print(f"SELECT 1:   {wall:.0f} us/call wall, {cpu:.0f} us/call CPU")
        wall, cpu = await _per_call(n // 3, lambda i: store.put_issued(record(1000 + i)))
        print(f"put_issued: {wall:.0f} us/call wall, {cpu:.0f} us/call CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="SELECT 1 calls (put_issued: a third of it)")
    args = parser.parse_args()
    print(f"scepd from {scepd.__file__}")
    with postgres_server() as server:
        trio.run(run, server.url(server.create_database()), args.n)


if __name__ == "__main__":
    main()
