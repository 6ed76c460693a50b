"""The key layout's cost over HTTP: the default (RSA-3072 CA + RSA-2048 RA) against the lone CA.

Before issue 13 the RSA-3072 CA key did all three private-key operations of
an enrollment (open the envelope, sign the certificate, sign the reply); on
the default layout now the RSA-2048 RA does two of them. This starts both
layouts (same token workers, same machine), builds every message before the
clock starts, and runs interleaved rounds (lone, default, lone, default, ...)
at one concurrency, printing enrollments per second, the server's CPU per
enrollment and failures, per round and as medians with the per-round ratio.

    .venv/bin/python -m bench.layout -n 300 --rounds 3 -c 8

A benchmark, not a test; its figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import trio

from bench import loadgen
from tests.support.daemon import init_state, running

CHALLENGE = "layout-bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="timed enrollments per layout and round")
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="token.workers of both daemons")
    args = ap.parse_args()
    layouts = {"lone CA (RSA-3072 does all three)": True, "default (CA-3072 + RA-2048)": False}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory(prefix="scepd-layout-") as tmp:
        for no_ra in layouts.values():
            init_state(Path(tmp) / ("lone" if no_ra else "default"), CHALLENGE, workers=args.workers, no_ra=no_ra)
        for round_ in range(args.rounds):
            for name, no_ra in layouts.items():
                state = Path(tmp) / ("lone" if no_ra else "default")
                with running(state, CHALLENGE) as daemon:
                    ca_certs, messages = loadgen.prepare(daemon.url, CHALLENGE, args.n + 16, Path(tmp) / "client-keys")
                    wall, _, server_cpu, _, replies = trio.run(
                        loadgen.run, daemon.url, messages, args.concurrency, 16, daemon.proc.pid
                    )
                    ok, failures = loadgen.check(messages[16:], replies[16:], ca_certs)
                rate = args.n / wall
                rates[name].append(rate)
                cpu = (server_cpu or 0.0) / args.n * 1000
                print(
                    f"round {round_ + 1} {name:<36} {rate:7.1f} enrollments/s  {cpu:6.2f} ms CPU each"
                    f"  ok={ok} failures={failures or 0}",
                    flush=True,
                )
    lone, default = rates.values()
    ratios = [d / a for a, d in zip(lone, default)]
    print(
        f"median: lone CA {statistics.median(lone):.1f}/s, default {statistics.median(default):.1f}/s;"
        f" default/lone per round {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
