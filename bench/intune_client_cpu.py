"""The daemon's CPU for one Intune enrollment's two calls, alone: validateRequest + successNotification.

    python -m bench.intune_client_cpu [-n 2000] [-c 64] [--delay 0.2]

Starts the fake Intune in its own process (as bench/intune_load.py does), mints n
challenges through its admin API and builds every CSR before the clock, then runs
scepd's own IntuneClient (the HTTP client `scepd serve` builds, Entra token cached
after a first call) from c concurrent Trio tasks: validate, then notify success for a
certificate. Prints this process's CPU time per pair (what the daemon's event loop
pays for Intune, minus the store) and the fake's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bench.intune_load import FakeProcess
from bench.loadgen import processes_cpu
from scepd.config import load, read_secret
from scepd.intune.auth import ClientSecret
from scepd.intune.client import IntuneClient
from scepd.scep.client import make_self_signed
from scepd.wiring import intune_http
from tests.support.daemon import init_state
from tests.support.scep_client import make_csr


async def pairs(client: IntuneClient, work: list[tuple[str, bytes, x509.Certificate]], concurrency: int) -> float:
    await client.validate(work[0][0], work[0][1])  # token and discovery, before the clock
    queue = iter(work[1:])
    start = time.process_time()

    async def one() -> None:
        for tid, csr, cert in queue:
            verdict = await client.validate(tid, csr)
            assert verdict.success, verdict
            verdict = await client.notify_success(tid, csr, cert)
            assert verdict.success, verdict

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.2)
    args = ap.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        with FakeProcess.running(state) as fake:
            init_state(state, "x", extra_toml=fake.intune_toml())
            config = load(state / "scepd.toml")
            assert config.intune is not None and config.intune.client_secret_source is not None
            work = []
            now = dt.datetime.now(dt.UTC)
            for i in range(args.n + 1):
                cn = f"bench-client-{i}"
                challenge = fake.admin("challenges", {"subject": f"CN={cn}", "ttl": 3600})["challenge"]
                work.append(
                    (
                        f"tid-{i}-{time.time_ns()}",
                        make_csr(key, cn, challenge).public_bytes(Encoding.DER),
                        make_self_signed(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), now),
                    )
                )
            for route in ("validate", "success"):
                fake.admin("faults", {"route": route, "times": 10**7, "delay": args.delay})

            async def run() -> float:
                async with intune_http(config.intune) as http:
                    assert config.intune is not None and config.intune.client_secret_source is not None
                    credential = ClientSecret(read_secret(config.intune.client_secret_source))
                    client = IntuneClient(config.intune.client, credential, http)
                    return await pairs(client, work, args.c)

            fake_before = processes_cpu([fake.proc.pid])
            wall = time.perf_counter()
            cpu = trio.run(run)
            wall = time.perf_counter() - wall
            fake_cpu = processes_cpu([fake.proc.pid]) - fake_before
    print(
        f"{args.n} validate+success pairs, {args.c} at once, fake delay {args.delay * 1000:.0f} ms: "
        f"client {cpu / args.n * 1000:.2f} ms CPU per pair, fake {fake_cpu / args.n * 1000:.2f} ms, "
        f"{args.n / wall:.0f} pairs/s"
    )


if __name__ == "__main__":
    main()
