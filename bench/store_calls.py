"""The store calls of one enrollment, without the daemon: SQLite against PostgreSQL (both psycopg libpq bindings).

A static-challenge enrollment asks the store two things: `find_by_transaction` before signing (a retry
gets the certificate already issued) and `put_issued(once=True)` after. This runs that pair `-n` times
in a row from one Trio task, as the daemon's event loop would with one client, and prints per pair the
wall time, this process's CPU (event loop and store thread) and, for PostgreSQL, the server's CPU. Each
store runs in a fresh child process (psycopg picks its libpq binding at import: PSYCOPG_IMPL), in
`--rounds` alternating rounds, against a private PostgreSQL server (tests/support/postgres.py).

    .venv/bin/python -m bench.store_calls [-n 2000] [--rounds 3]

It says what the backend costs per enrollment when nothing else competes; bench/pg_store.py says what
that does to a whole daemon.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench import loadgen
from scepd.store.backends import open_store
from scepd.store.base import CertificateRecord, CertStatus
from tests.support.postgres import postgres_server

WARMUP = 50
NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
DER = bytes(1200)  # about an RSA-2048 device certificate's size


def record(serial: int, transaction_id: str) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        transaction_id=transaction_id,
        subject=f"CN=device-{serial},O=Example",
        requester=f"CN=device-{serial}",
        csr_sha256="cd" * 32,
        profile="default",
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=365),
        issued_at=NOW,
        status=CertStatus.VALID,
        der=DER,
    )


async def _pairs(location: str, n: int, server_pid: int | None) -> dict[str, float]:
    def server() -> float:
        return loadgen.processes_cpu(loadgen.process_tree(server_pid)) if server_pid else 0.0

    async with open_store(location) as store:
        for i in range(WARMUP):
            await store.put_issued(record(0x100000 + i, transaction_id=f"warm-{i}"), once=True)
        s0, c0, t0 = server(), time.process_time(), time.perf_counter()
        for i in range(1, n + 1):
            await store.find_by_transaction(f"tx-{i}", "cd" * 32)
            await store.put_issued(record(i, transaction_id=f"tx-{i}"), once=True)
        wall, cpu, srv = time.perf_counter() - t0, time.process_time() - c0, server() - s0
        stored = len(await store.list_certificates(limit=n + WARMUP + 1))
    assert stored == n + WARMUP, stored
    return {"wall_ms": wall / n * 1000, "client_ms": cpu / n * 1000, "server_ms": srv / n * 1000}


def child(location: str, n: int, server_pid: int | None) -> None:
    print(json.dumps(trio.run(_pairs, location, n, server_pid)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="find + put pairs per store and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("LOCATION", "SERVER_PID"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.n, int(args.child[1]) or None)
        return
    print(f"{args.n} pairs of find_by_transaction + put_issued(once=True) per round, one task, nothing else running")
    print(f"{'store':<22} {'wall ms':>8} {'client CPU ms':>14} {'server CPU ms':>14}")
    with tempfile.TemporaryDirectory(prefix="scepd-store-calls-") as tmp, postgres_server() as postgres:
        for number in range(1, args.rounds + 1):
            runs = [("SQLite", str(Path(tmp) / f"r{number}.sqlite3"), {}, 0)]
            for impl in ("binary", "python"):
                url = postgres.url(postgres.create_database())
                runs.append((f"PostgreSQL, {impl}", url, {"PSYCOPG_IMPL": impl}, postgres.pid or 0))
            for name, location, env, pid in runs:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.store_calls", "-n", str(args.n), "--child", location, str(pid)],
                    env=dict(os.environ, **env),
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out)
                server = f"{r['server_ms']:>14.3f}" if pid else f"{'':>14}"
                print(
                    f"{name + ' ' + str(number):<22} {r['wall_ms']:>8.3f} {r['client_ms']:>14.3f} {server}", flush=True
                )


if __name__ == "__main__":
    main()
