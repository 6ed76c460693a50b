"""Intune enrollments in flight at once: does a slow Intune cost enrollment rate?

One scepd (real SoftHSM2 token) serves two endpoints: /scep with a static
challenge and /intune, which validates with the fake Intune and notifies it. The
fake runs in its own process and answers validateRequest and successNotification
each after `--delay` seconds (200 ms by default, the slow end of what Intune
does). Rounds interleave: static, Intune, static, Intune, ..., static, all at the
same concurrency, and each Intune round is compared with the mean of the two
static rounds on either side of it, so a drift of the machine's speed (other work
on its 2 cores) between rounds cancels out.

    .venv/bin/python bench/intune_load.py [-n 512] [-c 64] [--delay 0.2] [--pairs 3]

Messages are built before the clock, one keep-alive connection per client,
replies opened and checked after the clock. Every Intune device gets its own
minted challenge and transaction. For each round the CPU time of every process
in the timed window is read from /proc and given per enrollment: the daemon's
event loop, its token worker processes, the fake Intune, this load generator,
and the rest of the machine (from /proc/stat: whatever else runs on it), with
the machine's idle share; that says where an Intune enrollment's extra cost goes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import loadgen
from tests.support.daemon import init_state, running

STATIC = "bench-static"


class FakeProcess:
    """`python -m tests.support.fake_intune serve` on a free port, driven through its admin API."""

    SECRET = "bench-client-secret"

    @classmethod
    @contextmanager
    def running(cls, state: Path) -> Iterator[FakeProcess]:
        """A fake whose Entra client secret is the file `state`/intune-secret; stopped on exit."""
        secret = state / "intune-secret"
        secret.write_text(cls.SECRET + "\n")
        fake = cls(secret)
        try:
            yield fake
        finally:
            fake.stop()

    def __init__(self, secret_file: Path) -> None:
        self.secret_file = secret_file
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
        self.http = httpx.Client(timeout=30)

    def admin(self, path: str, body: Any) -> Any:
        # One client for all: a fresh one per call would load the CA store each time (~0.1 s of CPU).
        r = self.http.post(self.url + "/_fake/" + path, json=body)
        r.raise_for_status()
        return r.json()

    def intune_toml(self) -> str:
        """The [intune] table for a scepd configuration that talks to this fake."""
        return self.snippet.replace("file:/path/to/client-secret", f"file:{self.secret_file}")

    def stop(self) -> None:
        self.http.close()
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
        messages.append((key, loadgen.pkcs_req(key, cn, challenge_for(cn), ca_certs[0], now)))
    return messages


class Meter:
    """CPU seconds per process group over a window: daemon loop, token workers, fake, this process, rest."""

    GROUPS = ("daemon", "workers", "fake", "loadgen", "other")

    def __init__(self, daemon_pid: int, fake_pid: int) -> None:
        self.daemon_pid, self.fake_pid = daemon_pid, fake_pid

    def snapshot(self) -> dict[str, float]:
        total, token = loadgen.cpu_split(self.daemon_pid)
        busy, idle, _ = loadgen.machine_cpu()
        return {
            "daemon": total - token,
            "workers": token,
            "fake": loadgen.processes_cpu(loadgen.process_tree(self.fake_pid)),
            "loadgen": time.process_time(),
            "busy": busy,
            "idle": idle,
        }

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in before}
        d["other"] = max(0.0, d["busy"] - sum(d[g] for g in ("daemon", "workers", "fake", "loadgen")))
        return d


def round_(
    label: str, url: str, messages: list[tuple[Any, bytes]], concurrency: int, warmup: int, meter: Meter
) -> dict[str, Any]:
    elapsed, cpu, latencies, replies = trio.run(loadgen.timed_post_all, url, messages, concurrency, warmup, meter)
    ca_certs = loadgen.fetch_ca(url)
    ok, failures = loadgen.check(messages[warmup:], replies[warmup:], ca_certs)
    n = len(messages) - warmup
    result: dict[str, Any] = {
        "label": label,
        "n": n,
        "ok": ok,
        "failures": failures,
        "seconds": elapsed,
        "rate": n / elapsed,
        "p50_ms": loadgen.pct(latencies, 50) * 1000,
        "p95_ms": loadgen.pct(latencies, 95) * 1000,
        "idle_share": cpu["idle"] / (cpu["idle"] + cpu["busy"]),
    }
    for group in Meter.GROUPS:
        result[group + "_ms"] = cpu[group] / n * 1000
    return result


def _ours(r: dict[str, Any]) -> float:
    """CPU ms per enrollment of the processes this benchmark runs (the rest of the machine left out)."""
    return float(sum(r[g + "_ms"] for g in ("daemon", "workers", "fake", "loadgen")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=512, help="timed enrollments per round")
    ap.add_argument("-c", type=int, default=64, help="concurrent clients")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the fake takes per Intune answer")
    ap.add_argument("--pairs", type=int, default=3, help="Intune rounds (each between two static rounds)")
    ap.add_argument("--warmup", type=int, default=64, help="untimed enrollments before each round's clock")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="server.processes (init's default)")
    ap.add_argument("--workers", type=int, default=1, help="token.workers per process (scepd init's default)")
    ap.add_argument("--keys", type=int, default=16, help="client keys, reused across messages")
    ap.add_argument("--json", type=Path, help="also write every round's figures to this file")
    args = ap.parse_args()

    keys = loadgen.client_keys(args.keys)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        with FakeProcess.running(state) as fake:
            toml = fake.intune_toml() + '\n[endpoints.intune]\npath = "/intune"\nchallenge = "intune"\n'
            init_state(state, STATIC, workers=args.workers, processes=args.processes, extra_toml=toml)
            for route in ("validate", "success"):
                fake.admin("faults", {"route": route, "times": 10**7, "delay": args.delay})
            with running(state, STATIC, path="/scep") as daemon:
                meter = Meter(daemon.proc.pid, fake.proc.pid)
                static_url, intune_url = daemon.base_url + "/scep", daemon.base_url + "/intune"
                size = args.warmup + args.n
                if os.environ.get("SCEPD_BENCH_PAUSE"):  # attach a profiler to the daemon now
                    input(f"daemon pid {daemon.proc.pid}; press enter to start the rounds")
                for i in range(2 * args.pairs + 1):
                    if i % 2 == 0:
                        msgs = build_messages(static_url, keys, size, "static", lambda cn: STATIC)
                        rounds.append(round_("static", static_url, msgs, args.c, args.warmup, meter))
                    else:
                        msgs = build_messages(
                            intune_url,
                            keys,
                            size,
                            "intune",
                            lambda cn: fake.admin("challenges", {"subject": f"CN={cn}", "ttl": 3600})["challenge"],
                        )
                        rounds.append(round_("intune", intune_url, msgs, args.c, args.warmup, meter))

    print(
        f"Intune answers validateRequest and successNotification after {args.delay * 1000:.0f} ms each; "
        f"{args.c} clients; {args.n} timed enrollments per round after {args.warmup} untimed; "
        f"server.processes = {args.processes}, token.workers = {args.workers}"
    )
    print("CPU ms per enrollment: daemon (serving processes), token, fake Intune, load generator, rest of the machine")
    print(
        f"{'round':>8} {'ok':>5} {'enroll/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'daemon':>7} {'workers':>8} "
        f"{'fake':>6} {'loadgen':>8} {'other':>6} {'idle':>5} {'ratio':>6}"
    )
    ratios, cpu_ratios = [], []
    for i, r in enumerate(rounds):
        shown = ""
        if r["label"] == "intune":
            ratio = r["rate"] / statistics.mean([rounds[i - 1]["rate"], rounds[i + 1]["rate"]])
            ratios.append(ratio)
            cpu_ratios.append(statistics.mean([_ours(rounds[i - 1]), _ours(rounds[i + 1])]) / _ours(r))
            shown = f"{ratio:.2f}"
        print(
            f"{r['label'] + ' ' + str(i // 2 + 1 if r['label'] == 'static' else (i + 1) // 2):>8} {r['ok']:>5} "
            f"{r['rate']:>9.1f} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['daemon_ms']:>7.2f} "
            f"{r['workers_ms']:>8.2f} {r['fake_ms']:>6.2f} {r['loadgen_ms']:>8.2f} {r['other_ms']:>6.2f} "
            f"{r['idle_share']:>5.0%} {shown:>6}"
        )
        if r["failures"]:
            print("         failures: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["failures"].items())))
    print(
        f"intune/static rate ratio (each Intune round against the mean of its neighbours): median "
        f"{statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} rounds"
    )
    print(
        f"the same ratio if the rate were set by CPU alone (static CPU / Intune CPU per enrollment, daemon, token, "
        f"fake and load generator): median {statistics.median(cpu_ratios):.2f}; a measured ratio below it means "
        f"Intune enrollments also wait for something other than CPU"
    )
    print("mean CPU ms per enrollment, static -> intune (difference):")
    for group in Meter.GROUPS:
        s_ = statistics.mean(r[group + "_ms"] for r in rounds if r["label"] == "static")
        i_ = statistics.mean(r[group + "_ms"] for r in rounds if r["label"] == "intune")
        print(f"  {group:<8} {s_:6.2f} -> {i_:6.2f} ({i_ - s_:+.2f})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rounds": rounds}, indent=1))
    failed = any(r["ok"] != r["n"] for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
