"""How long scepd takes to answer each kind of unreadable envelope: a timing look at the oracle.

Every malformed key-transport shape gets the same FAILURE answer
(tests/e2e/test_oracle.py proves that); this measures whether the answer
TIME still tells them apart. It starts a default daemon (CA + RA on a fresh
SoftHSM2 token), builds every request before the clock starts, then sends
the shapes interleaved (round-robin, so drift hits all alike) one at a time
over one keep-alive connection, and prints per shape the median, the 10th
and 90th percentiles of the answer time, and, against the "v1.5 broken
header" shape, the difference of medians and the Kolmogorov-Smirnov
distance of the two distributions (0: identical, 1: disjoint).

    .venv/bin/python -m bench.envelope_timing -n 400

A benchmark, not a test: figures go to docs/security.md, not assertions.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.test_oracle import request, shapes
from tests.support.daemon import init_state, running
from tests.support.scep_client import Client, make_csr, rsa_key

CHALLENGE = "timing-bench"
BASELINE = "v1.5 broken header"


def ks_distance(a: list[float], b: list[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = sorted(a), sorted(b)
    return max(abs(bisect.bisect_right(a, v) / len(a) - bisect.bisect_right(b, v) / len(b)) for v in set(a) | set(b))


async def measure(url: str, n: int) -> dict[str, list[float]]:
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(url, http)
        await client.get_ca_cert()
        pub = client.recipient.public_key()
        assert isinstance(pub, rsa.RSAPublicKey)
        key = rsa_key()
        csr_der = make_csr(key, "probe", CHALLENGE).public_bytes(Encoding.DER)
        # Every message built before the clock starts; "good" is left out (it enrolls, a different path).
        bodies = {
            name: [request(client, key, *shape) for _ in range(n)]
            for name, shape in shapes(pub, csr_der).items()
            if name != "good"
        }
        times: dict[str, list[float]] = {name: [] for name in bodies}
        for name in bodies:  # warm the connection and the token workers
            await client.post(bodies[name][0])
        for i in range(n):
            for name, items in bodies.items():
                t0 = time.perf_counter()
                r = await client.post(items[i])
                times[name].append(time.perf_counter() - t0)
                assert r.status_code == 200, (name, r.status_code)
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="requests per shape")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scepd-timing-") as tmp:
        state = Path(tmp) / "state"
        init_state(state, CHALLENGE, workers=2)
        with running(state, CHALLENGE) as daemon:
            times = trio.run(measure, daemon.url, args.n)
    base = times[BASELINE]
    print(f"{'shape':<36} {'median ms':>10} {'p10':>8} {'p90':>8} {'Δmedian ms':>11} {'KS':>6}")
    for name, values in times.items():
        q = statistics.quantiles(values, n=10)
        delta = (statistics.median(values) - statistics.median(base)) * 1000
        print(
            f"{name:<36} {statistics.median(values) * 1000:>10.3f} {q[0] * 1000:>8.3f} {q[-1] * 1000:>8.3f}"
            f" {delta:>+11.3f} {ks_distance(values, base):>6.3f}"
        )
    # Two samples of n from one distribution differ by more than this KS distance 5 % of the time.
    print(
        f"KS distance that two samples of {args.n} from one distribution exceed 5 % of the time:"
        f" {1.358 * (2 / args.n) ** 0.5:.3f}"
    )


if __name__ == "__main__":
    main()
