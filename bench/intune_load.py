"""Intune enrollments in flight at once: does a slow Intune cost enrollment rate?

One scepd (real SoftHSM2 token) serves two endpoints: /scep with a static
challenge and /intune, which validates with the fake Intune and notifies it. The
fake runs in its own process (so its work does not share this process's GIL
with the load generator) and answers validateRequest and successNotification
each after `--delay` seconds (200 ms by default, the slow end of what Intune
does). Rounds alternate: static, Intune, static, Intune, ... at the same
concurrency, so the ratio of each Intune round to the static round beside it is
measured under the same load from whatever else runs on the machine.

    .venv/bin/python -m bench.intune_load [-n 256] [-c 64] [--delay 0.2] [--pairs 2]

Both rounds go through bench/loadgen.run: messages built before the clock, one
keep-alive connection per client, replies opened and checked after the clock.
Every Intune device gets its own minted challenge and transaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import loadgen
from scepd.scep.client import build_pki_message, make_self_signed
from scepd.scep.constants import MessageType
from tests.support.daemon import init_state, running
from tests.support.scep_client import make_csr

STATIC = "bench-static"


class FakeProcess:
    """`python -m tests.support.fake_intune serve` on a free port, driven through its admin API."""

    def __init__(self, secret_file: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fake_intune",
                "serve",
                "--port",
                "0",
                "--client-secret-file",
                str(secret_file),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith("fake Intune serving at "):
                self.url = line.split()[-1]
                break
        else:
            raise RuntimeError("the fake did not start:\n" + "".join(lines))
        self.snippet = ""
        for line in self.proc.stdout:  # the printed [intune] table, up to its last key
            self.snippet += line
            if line.startswith("intune_resource_url"):
                break
        self.snippet = self.snippet[self.snippet.index("[intune]") :]

    def admin(self, path: str, body: Any) -> Any:
        r = httpx.post(self.url + "/_fake/" + path, json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def build_messages(
    url: str, keys: list[rsa.RSAPrivateKey], n: int, label: str, challenge_for: Callable[[str], str]
) -> list[tuple[Any, bytes]]:
    """PKCSReq messages for n devices, each with its own subject, transaction and challenge."""
    ca_certs = loadgen.fetch_ca(url)
    now = dt.datetime.now(dt.UTC)
    messages = []
    for i in range(n):
        key = keys[i % len(keys)]
        cn = f"bench-{label}-{i}-{secrets.token_hex(4)}"
        csr = make_csr(key, cn, challenge_for(cn))
        body = build_pki_message(
            message_type=MessageType.PKCS_REQ,
            payload=csr.public_bytes(serialization.Encoding.DER),
            transaction_id=secrets.token_hex(16),
            sender_nonce=os.urandom(16),
            recipient_certificate=ca_certs[0],
            signer_certificate=make_self_signed(key, csr.subject, now),
            signer_key=key,
        )
        messages.append((key, body))
    return messages


def round_(
    label: str, url: str, messages: list[tuple[Any, bytes]], concurrency: int, pid: int, warmup: int, fake_pid: int
) -> dict[str, Any]:
    fake_cpu = loadgen.cpu_seconds(fake_pid)  # warm-up included: a share of the machine, not a figure
    elapsed, client_cpu, server_cpu, latencies, replies = trio.run(loadgen.run, url, messages, concurrency, warmup, pid)
    fake_cpu = loadgen.cpu_seconds(fake_pid) - fake_cpu
    ca_certs = loadgen.fetch_ca(url)
    ok, failures = loadgen.check(messages[warmup:], replies[warmup:], ca_certs)
    n = len(messages) - warmup
    return {
        "label": label,
        "n": n,
        "ok": ok,
        "failures": failures,
        "seconds": elapsed,
        "rate": n / elapsed,
        "p50_ms": loadgen.pct(latencies, 50) * 1000,
        "p95_ms": loadgen.pct(latencies, 95) * 1000,
        "client_cpu_ms": client_cpu / n * 1000,
        "server_cpu_ms": (server_cpu or 0.0) / n * 1000,
        "fake_cpu_ms": fake_cpu / len(messages) * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=256, help="timed enrollments per round")
    ap.add_argument("-c", type=int, default=64, help="concurrent clients")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the fake takes per Intune answer")
    ap.add_argument("--pairs", type=int, default=2, help="static/Intune round pairs")
    ap.add_argument("--warmup", type=int, default=32, help="untimed enrollments before each round's clock")
    ap.add_argument("--workers", type=int, default=2, help="token.workers of the daemon (scepd init's default)")
    ap.add_argument("--keys", type=int, default=16, help="client keys, reused across messages")
    args = ap.parse_args()

    keys = loadgen.client_keys(args.keys)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        secret = state / "intune-secret"
        secret.write_text("bench-client-secret\n")
        fake = FakeProcess(secret)
        try:
            toml = fake.snippet.replace("file:/path/to/client-secret", f"file:{secret}")
            toml += '\n[endpoints.intune]\npath = "/intune"\nchallenge = "intune"\n'
            init_state(state, STATIC, workers=args.workers, extra_toml=toml)
            for route in ("validate", "success"):
                fake.admin("faults", {"route": route, "times": 10**7, "delay": args.delay})
            with running(state, STATIC, path="/scep") as daemon:
                pid = daemon.proc.pid
                static_url, intune_url = daemon.base_url + "/scep", daemon.base_url + "/intune"
                size = args.warmup + args.n
                results: list[tuple[dict[str, Any], dict[str, Any]]] = []
                for _ in range(args.pairs):
                    static_msgs = build_messages(static_url, keys, size, "static", lambda cn: STATIC)
                    intune_msgs = build_messages(
                        intune_url,
                        keys,
                        size,
                        "intune",
                        lambda cn: fake.admin("challenges", {"subject": f"CN={cn}", "ttl": 3600})["challenge"],
                    )
                    if os.environ.get("SCEPD_BENCH_PAUSE"):  # attach a profiler to `pid` now
                        input(f"daemon pid {pid}; press enter to start the rounds")
                    base = round_("static", static_url, static_msgs, args.c, pid, args.warmup, fake.proc.pid)
                    with_intune = round_("intune", intune_url, intune_msgs, args.c, pid, args.warmup, fake.proc.pid)
                    results.append((base, with_intune))
        finally:
            fake.stop()

    print(
        f"Intune answers validate and successNotification after {args.delay * 1000:.0f} ms each; "
        f"{args.c} clients; {args.n} timed enrollments per round after {args.warmup} untimed"
    )
    print("cpu ms: per enrollment, of the daemon (with its token workers), of this load generator, and of the fake")
    print(
        f"{'round':>7} {'ok':>5} {'enroll/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'server cpu':>11} "
        f"{'client cpu':>11} {'fake cpu':>9} {'intune/static':>14}"
    )
    ratios = []
    for base, with_intune in results:
        ratio = with_intune["rate"] / base["rate"]
        ratios.append(ratio)
        for r, shown in ((base, ""), (with_intune, f"{ratio:.2f}")):
            print(
                f"{r['label']:>7} {r['ok']:>5} {r['rate']:>9.1f} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} "
                f"{r['server_cpu_ms']:>11.2f} {r['client_cpu_ms']:>11.2f} {r['fake_cpu_ms']:>9.2f} {shown:>14}"
            )
            if r["failures"]:
                print("        failures: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["failures"].items())))
    print(f"median intune/static rate ratio over {len(ratios)} pairs: {statistics.median(ratios):.2f}")
    failed = any(r["ok"] != r["n"] for pair in results for r in pair)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
