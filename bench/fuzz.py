"""Long fuzz runs (issue 14 point 7): mutated real SCEP messages against the readers, and over HTTP.

    nice -n 19 python -m bench.fuzz readers -n 1000000 [--jobs 1] [--seed 1]
    nice -n 19 python -m bench.fuzz http -n 100000 [--concurrency 4] [--seed 1]

`readers` feeds parse_pki_message, parse_envelope, the CSR load and the IssuerAndSubject/Serial
readers (tests/support/fuzzing.py) in worker processes, in batches whose inputs follow from (seed, batch),
so any finding can be replayed. It prints the outcomes per reader, unexpected exceptions (each one
a would-be 500; the first few are written to --out as .bin files), inputs slower than --slow
seconds, batches that hung (no answer in --batch-timeout) and worker processes that died (crashes).

`http` starts its own daemon (scepd init + serve on a loopback port, SoftHSM2 token, as the e2e
tests do), mutates requests addressed to its CA (and, for --inner of them, the CSR inside a valid
envelope, so the CSR reader behind the key is reached too) and sends them by POST and by GET. It
counts the status codes, 5xx, requests that took over --slow seconds or timed out, and checks that
the daemon is still alive, still enrolls an unmutated request, and logged no traceback.

It is a benchmark, not a test: the bounded versions run in CI (tests/scep/test_fuzz_readers.py,
tests/e2e/test_fuzz_http.py).
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tests.support.fuzzing import READERS, Seeds, Unexpected, make_seeds, mutate, random_ops, seeds_for

# Shares of the inputs per reader: the PKIOperation reader is what every request meets first.
WEIGHTS = {"message": 0.5, "envelope": 0.25, "csr": 0.15, "issuer_and": 0.10}
_seeds: Seeds | None = None


def _init(seeds: Seeds) -> None:
    global _seeds
    _seeds = seeds


def _batch(base_seed: int, batch: int, size: int, slow: float) -> dict[str, Any]:
    """Run one batch; everything about input i follows from (base_seed, batch, i)."""
    assert _seeds is not None
    rng = random.Random(f"{base_seed}:{batch}")
    names = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected: list[tuple[str, str, bytes]] = []
    slow_inputs: list[tuple[str, float, bytes]] = []
    longest = 0.0
    for _ in range(size):
        reader = rng.choices(names, weights)[0]
        pool = seeds_for(_seeds, reader)
        data = mutate(rng.choice(pool), random_ops(rng), rng.choice(_seeds.messages))
        started = time.perf_counter()
        try:
            outcome = READERS[reader](data)
        except Unexpected as e:
            outcome = "UNEXPECTED"
            if len(unexpected) < 20:
                unexpected.append((reader, str(e)[:300], data))
        took = time.perf_counter() - started
        longest = max(longest, took)
        if took > slow and len(slow_inputs) < 20:
            slow_inputs.append((reader, took, data))
        outcomes[f"{reader} {outcome}"] += 1
    return {"outcomes": outcomes, "unexpected": unexpected, "slow": slow_inputs, "longest": longest}


def run_readers(args: argparse.Namespace) -> int:
    seeds = make_seeds()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = (args.n + args.batch - 1) // args.batch
    totals: collections.Counter[str] = collections.Counter()
    unexpected: list[tuple[str, str, bytes]] = []
    slow: list[tuple[str, float, bytes]] = []
    hangs: list[int] = []
    crashes: list[int] = []
    longest = 0.0
    done = 0
    started = time.monotonic()
    pool = ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(seeds,))
    next_batch = 0
    pending: dict[Any, int] = {}
    while next_batch < batches or pending:
        while next_batch < batches and len(pending) < args.jobs * 2:
            size = min(args.batch, args.n - next_batch * args.batch)
            pending[pool.submit(_batch, args.seed, next_batch, size, args.slow)] = next_batch
            next_batch += 1
        future = next(iter(pending))
        batch = pending.pop(future)
        try:
            result = future.result(timeout=args.batch_timeout)
        except FutureTimeout:
            hangs.append(batch)
            result = None
        except BrokenProcessPool:
            crashes.append(batch)
            result = None
        if result is None:  # a hung or dead worker: start a fresh pool, resubmit what was queued
            requeue = list(pending.values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool = ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(seeds,))
            pending = {}
            for b in requeue:
                size = min(args.batch, args.n - b * args.batch)
                pending[pool.submit(_batch, args.seed, b, size, args.slow)] = b
            continue
        totals.update(result["outcomes"])
        unexpected += result["unexpected"]
        slow += result["slow"]
        longest = max(longest, result["longest"])
        done += sum(result["outcomes"].values())
        if args.progress and batch % max(1, batches // 20) == 0:
            print(f"  {done:,} inputs, {time.monotonic() - started:.0f} s", flush=True)
    pool.shutdown()
    elapsed = time.monotonic() - started
    for i, (reader, _text, data) in enumerate(unexpected[:20]):
        (out / f"unexpected-{reader}-{i}.bin").write_bytes(data)
    for i, (reader, _, data) in enumerate(slow[:20]):
        (out / f"slow-{reader}-{i}.bin").write_bytes(data)
    print(
        f"readers: {done:,} inputs in {elapsed:.0f} s ({done / elapsed:,.0f}/s), seed {args.seed}, {args.jobs} job(s)"
    )
    for key in sorted(totals):
        print(f"  {key:45s} {totals[key]:>10,}")
    print(f"unexpected exceptions (would-be 500s): {totals_of(totals, 'UNEXPECTED')}")
    for reader, text, _ in unexpected[:10]:
        print(f"  {reader}: {text}")
    print(f"inputs slower than {args.slow} s: {len(slow)}; slowest input {longest * 1000:.1f} ms")
    print(f"hung batches (no answer in {args.batch_timeout} s): {len(hangs)} {hangs[:10]}")
    print(f"crashed worker processes: {len(crashes)} {crashes[:10]}")
    return 1 if unexpected or hangs or crashes else 0


def totals_of(totals: collections.Counter[str], outcome: str) -> int:
    return sum(v for k, v in totals.items() if k.endswith(" " + outcome))


def run_http(args: argparse.Namespace) -> int:
    import datetime as dt

    import httpx
    import trio
    from cryptography import x509

    from scepd.scep.client import build_pki_message, make_self_signed
    from scepd.scep.constants import MessageType
    from tests.support.daemon import init_state, running
    from tests.support.scep_client import Client, make_csr, rsa_key

    challenge = "fuzz-http-challenge-Z9"
    with tempfile.TemporaryDirectory(prefix="scepd-fuzz-") as tmp:
        state = Path(tmp)
        init_state(state, challenge)
        with running(state, challenge) as daemon:
            # Clients encrypt to the RA on the default layout; the CA only signs.
            ca = x509.load_pem_x509_certificate(
                (daemon.ra_pem if daemon.ra_pem.exists() else daemon.ca_pem).read_bytes()
            )
            seeds = make_seeds(ca, challenge)
            statuses: collections.Counter[str] = collections.Counter()
            slow: list[float] = []
            longest = [0.0]
            client_key = rsa_key()
            signer = make_self_signed(
                client_key, x509.Name.from_rfc4514_string("CN=fuzzed csr"), dt.datetime.now(dt.UTC)
            )

            def inner(rng: random.Random) -> bytes | None:
                """A well-signed, well-enveloped PKCSReq around a mutated CSR: reaches the CSR reader."""
                csr = mutate(seeds.csrs[0], random_ops(rng), rng.choice(seeds.messages))
                return build_pki_message(
                    message_type=MessageType.PKCS_REQ,
                    payload=csr,
                    transaction_id=os.urandom(8).hex(),
                    sender_nonce=os.urandom(16),
                    recipient_certificate=ca,
                    signer_certificate=signer,
                    signer_key=client_key,
                )

            errors: collections.Counter[str] = collections.Counter()
            rng = random.Random(args.seed)
            started = time.monotonic()

            async def one(http: httpx.AsyncClient, body: bytes, use_get: bool) -> None:
                t0 = time.perf_counter()
                try:
                    if use_get:
                        text = base64.b64encode(body).decode()
                        if rng.random() < 0.2:  # how some clients mangle it: unescaped + and /, URL-safe
                            text = text.replace("+", " ") if rng.random() < 0.5 else text.replace("+", "-")
                        r = await http.get(daemon.url, params={"operation": "PKIOperation", "message": text})
                    else:
                        r = await http.post(
                            daemon.url,
                            params={"operation": "PKIOperation"},
                            content=body,
                            headers={"content-type": "application/x-pki-message"},
                        )
                    statuses[f"{'GET' if use_get else 'POST'} {r.status_code}"] += 1
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                took = time.perf_counter() - t0
                longest[0] = max(longest[0], took)
                if took > args.slow:
                    slow.append(took)

            async def main() -> None:
                limit = trio.Semaphore(args.concurrency)
                async with httpx.AsyncClient(timeout=args.request_timeout) as http, trio.open_nursery() as n:
                    for i in range(args.n):
                        use_get = rng.random() < 0.3
                        if rng.random() < args.inner:
                            maybe = inner(rng)
                            if maybe is None:
                                continue
                            body = maybe
                        else:
                            body = mutate(rng.choice(seeds.messages), random_ops(rng), rng.choice(seeds.envelopes))

                        async def go(body: bytes = body, use_get: bool = use_get) -> None:
                            try:
                                await one(http, body, use_get)
                            finally:
                                limit.release()

                        await limit.acquire()  # back-pressure: at most `concurrency` in flight
                        n.start_soon(go)
                        if args.progress and i and i % max(1, args.n // 20) == 0:
                            print(f"  {i:,} requests, {time.monotonic() - started:.0f} s", flush=True)

            trio.run(main)
            elapsed = time.monotonic() - started

            async def still_enrolls() -> str:
                async with httpx.AsyncClient(timeout=30) as http:
                    client = Client(daemon.url, http)
                    await client.get_ca_cert()
                    key = rsa_key()
                    rep = await client.send(client.message(make_csr(key, "after-fuzz", challenge), key), key)
                    return rep.status.name

            after = trio.run(still_enrolls)
            alive = daemon.alive()
            log = daemon.log()
    total = sum(statuses.values())
    five = sum(v for k, v in statuses.items() if k.split()[1].startswith("5"))
    print(
        f"http: {total:,} requests answered of {args.n:,} in {elapsed:.0f} s ({total / elapsed:,.0f}/s),"
        f" concurrency {args.concurrency}, seed {args.seed}"
    )
    for key in sorted(statuses):
        print(f"  {key:12s} {statuses[key]:>10,}")
    print(
        f"5xx: {five}; transport errors: {dict(errors) or 0}; slower than {args.slow} s: {len(slow)}"
        f" (slowest {longest[0]:.2f} s)"
    )
    print(
        f"daemon alive afterwards: {alive}; an unmutated enrollment afterwards: {after};"
        f" tracebacks in its log: {log.count('Traceback')}"
    )
    return 0 if five == 0 and not errors and alive and after == "SUCCESS" and "Traceback" not in log else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("readers")
    r.add_argument("-n", type=int, default=1_000_000)
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--batch", type=int, default=5000)
    r.add_argument("--batch-timeout", type=float, default=300.0)
    h = sub.add_parser("http")
    h.add_argument("-n", type=int, default=100_000)
    h.add_argument("--concurrency", type=int, default=4)
    h.add_argument("--request-timeout", type=float, default=30.0)
    h.add_argument(
        "--inner", type=float, default=0.1, help="share of requests that are valid envelopes around a mutated CSR"
    )
    for sp in (r, h):
        sp.add_argument("--seed", type=int, default=1)
        sp.add_argument("--slow", type=float, default=1.0, help="seconds; an input slower than this is reported")
        sp.add_argument("--progress", action="store_true")
    r.add_argument("--out", default="bench/fuzz-findings", help="where unexpected and slow inputs are written")
    args = p.parse_args()
    return run_readers(args) if args.mode == "readers" else run_http(args)


if __name__ == "__main__":
    sys.exit(main())
