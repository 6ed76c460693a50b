"""Intune enrollments in flight at once: does a slow Intune serialise them?

The fake Intune answers validateRequest and successNotification each after
`--delay` seconds (200 ms by default, the slow end of what Intune does). N
devices enroll at concurrency 1 and at concurrency C against a real scepd on
a SoftHSM2 token. If enrollments waited behind one another, C clients could
not beat one; the printed figures show how far they overlap.

    .venv/bin/python bench/intune_load.py [-n 128] [-c 32] [--delay 0.2]

Messages are built before the clock starts; each device gets its own minted
challenge and transaction.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import trio  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from scepd.scep.constants import PkiStatus  # noqa: E402
from tests.daemon import init_state, running  # noqa: E402
from tests.fake_intune.server import running_fake_intune  # noqa: E402
from tests.fake_intune.state import FakeIntune  # noqa: E402
from tests.scep_client import Client, make_csr  # noqa: E402


async def run_round(url: str, fake: FakeIntune, keys: list[rsa.RSAPrivateKey], n: int, concurrency: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        client = Client(url, http)
        await client.get_ca_cert()
        jobs = []
        for i in range(n):
            cn = f"bench-{secrets.token_hex(4)}"
            key = keys[i % len(keys)]
            challenge = fake.mint_challenge(f"CN={cn}", ttl=3600)
            jobs.append((client.message(make_csr(key, cn, challenge), key), key))
        latencies: list[float] = []
        failures = 0
        queue = list(jobs)

        async def worker() -> None:
            nonlocal failures
            while queue:
                body, key = queue.pop()
                started = time.perf_counter()
                rep = await client.send(body, key)
                latencies.append(time.perf_counter() - started)
                if rep.status is not PkiStatus.SUCCESS:
                    failures += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "wall": wall,
        "rate": n / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "failures": failures,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=128, help="enrollments per round")
    ap.add_argument("-c", type=int, default=32, help="concurrency of the second round")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the fake takes per Intune answer")
    args = ap.parse_args()

    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(8)]
    with running_fake_intune() as fake, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        secret = state / "intune-secret"
        secret.write_text(fake.client_secret or "")
        toml = fake.config_snippet(f"file:{secret}") + '\n[endpoints.intune]\npath = "/intune"\nchallenge = "intune"\n'
        init_state(state, "bench-static", extra_toml=toml)
        for route in ("validate", "success"):
            fake.slow(route, args.delay, times=10**6)
        with running(state, "bench-static", path="/intune") as daemon:
            rounds = {}
            for concurrency in (1, args.c):
                rounds[concurrency] = trio.run(run_round, daemon.url, fake, keys, args.n, concurrency)
    per_call = 2 * args.delay
    print(f"Intune answers after {args.delay * 1000:.0f} ms; each enrollment waits for two answers "
          f"(validate, successNotification): {per_call * 1000:.0f} ms of Intune time per enrollment")
    print(f"{'clients':>8} {'n':>5} {'wall s':>8} {'enroll/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'failures':>9}")
    for concurrency, r in rounds.items():
        print(f"{concurrency:>8} {args.n:>5} {r['wall']:>8.2f} {r['rate']:>9.1f} {r['p50'] * 1000:>8.0f} "
              f"{r['p95'] * 1000:>8.0f} {r['failures']:>9.0f}")
    serial_floor = args.n * per_call
    overlap = serial_floor / rounds[args.c]["wall"]
    print(f"serialised, {args.n} enrollments would need at least {serial_floor:.1f} s; with {args.c} clients they "
          f"took {rounds[args.c]['wall']:.1f} s: {overlap:.1f} enrollments' Intune waits overlapped on average")
    return 1 if any(r["failures"] for r in rounds.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
