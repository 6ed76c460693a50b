"""How long `scepd store copy` takes for a large store, and what it costs.

    python -m bench.store_copy -n 100000 --revoked 20000 [--keep DIR]

Seeds an SQLite store with N certificates (DER of about 1 kB each, serials of
up to 160 bits, `--revoked` of them revoked) plus a held request and a
challenge per 100 certificates, straight through the SQLite codec with
executemany; starts a private PostgreSQL server (tests/support/postgres.py,
unix socket only) and times `copy_store` into a fresh database. Prints the
seconds, rows per second, this process's CPU seconds and peak RSS, and both
stores' sizes. Run it under `flock /work/wt/bench.lock` when others share
the machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import psycopg
import trio

from scepd.store.base import CertificateRecord, CertStatus, PendingRecord, PendingStatus
from scepd.store.copy import copy_store
from scepd.store.sqlite import SqliteStore
from scepd.store.sqlite.codecs import (
    CERTIFICATE_COLUMNS,
    PENDING_INSERT_COLUMNS,
    certificate_row,
    encode_time,
    pending_insert_row,
)
from tests.support.postgres import postgres_server

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def _certificate(i: int, rng: random.Random, revoked: bool) -> CertificateRecord:
    issued = NOW - dt.timedelta(minutes=i)
    return CertificateRecord(
        serial=rng.getrandbits(159) | (1 << 159) if i % 2 else i + 1,  # every other one a full 160 bits
        transaction_id=f"tx-{i}",
        subject=f"CN=device-{i},O=Example",
        requester=f"CN=device-{i}",
        csr_sha256=f"{i:064x}",
        profile="default",
        not_before=issued,
        not_after=issued + dt.timedelta(days=365),
        issued_at=issued,
        status=CertStatus.REVOKED if revoked else CertStatus.VALID,
        der=rng.randbytes(1000),
        revoked_at=issued + dt.timedelta(hours=1) if revoked else None,
        revocation_reason="keyCompromise" if revoked else None,
    )


def _held(i: int) -> PendingRecord:
    return PendingRecord(
        id=0,
        transaction_id=f"held-{i}",
        csr_sha256=f"{i:064x}",
        csr_der=b"csr",
        signer_der=b"signer",
        subject="CN=held",
        endpoint="held",
        profile="held",
        challenge_mode="static",
        message_type="PKCS_REQ",
        renewal_of=None,
        received_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1),
        status=PendingStatus.PENDING,
    )


def seed(path: Path, n: int, revoked: int) -> None:
    """N certificates in chunks (so seeding does not set this process's peak RSS), then the held requests."""
    trio.run(_create, path)
    rng = random.Random(1)
    revoked_ones = set(rng.sample(range(n), revoked))
    with sqlite3.connect(path) as db:
        for start in range(0, n, 5000):
            rows = [
                certificate_row(_certificate(i, rng, i in revoked_ones)) for i in range(start, min(n, start + 5000))
            ]
            db.executemany(f"INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES ({', '.join('?' * 14)})", rows)
        for i in range(n // 100):
            db.execute(
                f"INSERT INTO pending_requests ({PENDING_INSERT_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                pending_insert_row(_held(i)),
            )
            db.execute(
                "INSERT INTO challenges (digest, expires_at) VALUES (?, ?)",
                (f"{i:064x}", encode_time(NOW + dt.timedelta(hours=8))),
            )


async def _create(path: Path) -> None:
    async with SqliteStore.open(path):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--revoked", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scepd-copy-bench-") as tmp:
        source = Path(tmp) / "scepd.sqlite3"
        started = time.monotonic()
        seed(source, args.n, args.revoked)
        print(
            f"seeded {args.n} certificates in {time.monotonic() - started:.1f} s, {source.stat().st_size / 1e6:.0f} MB"
        )
        with postgres_server() as server:
            name = server.create_database()
            url = server.url(name)
            cpu = os.times()
            started = time.monotonic()
            report = copy_store(source, url)
            wall = time.monotonic() - started
            after = os.times()
            rows = sum(report.target.rows.values())
            with psycopg.connect(url) as conn:
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            print(f"copied {rows} rows in {wall:.2f} s ({rows / wall:,.0f} rows/s)")
            print(f"copy process CPU {after.user - cpu.user + after.system - cpu.system:.2f} s")
            print(f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
            print(f"target database {size[0] / 1e6 if size else 0:.0f} MB; rows {report.target.rows}")


if __name__ == "__main__":
    main()
