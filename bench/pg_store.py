"""What the PostgreSQL store costs against SQLite, in one run of alternating rounds.

Configurations, each the layout `scepd init` writes on this machine (one serving process per
core, one token worker each), all copies of one template so they share the CA and RA:

- A: one daemon on its SQLite file (the default);
- B: the same daemon with `[store] url` on a PostgreSQL database;
- C (with --nodes): two daemons, each its own state directory, on one PostgreSQL database,
  the clients dealt out to them in turn. On a machine whose cores the first daemon already
  fills this shows what a second node sharing those cores costs, not how nodes scale.

The PostgreSQL server is private to the run: `initdb` in a temporary directory, a unix socket
only, stopped by its PID at the end (tests/support/postgres.py, as the tests start theirs).
B and C each get their own database on it, so their rows are counted apart.

    .venv/bin/python -m bench.pg_store [-n 400] [-c 16] [--rounds 3] [--nodes] [--psycopg binary,python]

Every round starts its daemons, builds every PKCSReq (static challenge) before the clock,
sends `--warmup` of them untimed, then the rest timed over one keep-alive connection per
client; it reads the CPU time of every process group from /proc at the clock's start and
stop: the daemons' serving processes, their token workers, the PostgreSQL server's processes
(postmaster, one backend per connection, WAL writer, checkpointer...), this load generator,
and the rest of the machine. After the clock every reply is opened and checked against the
CA, the daemons are stopped, and every certificate a client received (warm-up included) must
be found in the store by its serial: a round that answered but lost rows fails the run.

The B/A (and C/A) ratio is taken per round (A B C, then C B A, and so on), and its median printed, beside
the ratio CPU alone would predict (A's CPU per enrollment over B's, all processes of the
run): a measured ratio below it means B also waits for something other than CPU (commit
round trips, fsync).

--psycopg python,binary runs B once per psycopg implementation (PSYCOPG_IMPL in the daemons'
environment): `python` reaches libpq through ctypes, `binary` through psycopg's compiled module.

--profile DIR runs py-spy on the daemons during every timed window and writes collapsed
stacks per thread to DIR; py-spy's own CPU then skews the rates, so such a run is for the
profile only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import trio

from bench import loadgen
from bench.intune_load import build_messages
from tests.support.daemon import Daemon, init_state, running
from tests.support.postgres import PostgresServer, postgres_server

CHALLENGE = "pg-store-bench-challenge"
PY_SPY = Path(sys.executable).with_name("py-spy")


def use_database(state: Path, url: str) -> None:
    """The state directory's config with the SQLite file replaced by `url`."""
    config = state / "scepd.toml"
    text = config.read_text()
    assert text.count('path = "scepd.sqlite3"\n') == 1, text
    config.write_text(text.replace('path = "scepd.sqlite3"\n', f'url = "{url}"\n'))


class Meter:
    """CPU seconds per group over a window: the daemons' serving processes (event loop and Trio's threads), their
    store threads, their token workers; the PostgreSQL server; this load generator; the rest of the machine."""

    GROUPS = ("daemon", "store", "token", "postgres", "loadgen", "other")

    def __init__(self, daemon_pids: Sequence[int], postgres_pid: int | None) -> None:
        self.daemon_pids, self.postgres_pid = daemon_pids, postgres_pid

    def snapshot(self) -> dict[str, float]:
        daemon = store = token = 0.0
        for pid in self.daemon_pids:
            parts = loadgen.cpu_parts(pid)
            daemon, store, token = daemon + parts["rest"], store + parts["store"], token + parts["token"]
        busy, idle, switches = loadgen.machine_cpu()
        return {
            "switches": switches,
            "daemon": daemon,
            "store": store,
            "token": token,
            # The postmaster's children: a backend per connection, WAL writer, checkpointer, ...
            "postgres": loadgen.processes_cpu(loadgen.process_tree(self.postgres_pid)) if self.postgres_pid else 0.0,
            "loadgen": time.process_time(),
            "busy": busy,
            "idle": idle,
        }

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in before}
        d["other"] = max(0.0, d["busy"] - sum(d[g] for g in Meter.GROUPS if g != "other"))
        # Context switches on the whole machine: a round trip to another process is two, a wake-up each way.
        return d


@contextmanager
def profiling(directory: Path | None, label: str, pids: Sequence[int]) -> Iterator[None]:
    """py-spy on each daemon (its serving processes and token workers) while the block runs."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--threads", "--format", "raw",
             "--output", str(directory / f"{label}-{pid}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]  # fmt: skip
    time.sleep(1.0)  # py-spy attaches to every process before the clock starts
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies:
            spy.wait(30)


def stored_serials(location: str) -> set[int]:
    """Every serial in the store at `location` (an SQLite file or a PostgreSQL URL)."""
    if location.startswith("postgresql://"):
        with psycopg.connect(location) as conn:
            rows = conn.execute("SELECT serial FROM certificates").fetchall()
    else:
        with sqlite3.connect(f"file:{location}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT serial FROM certificates").fetchall()
    return {int(row[0], 16) for row in rows}


@dataclass
class Configuration:
    label: str
    states: list[Path]
    location: str  # the SQLite file or the PostgreSQL URL
    env: dict[str, str] = field(default_factory=dict)  # for the daemons: PSYCOPG_IMPL


def round_(
    config: Configuration, postgres: PostgresServer, keys: list[Any], args: argparse.Namespace, number: int
) -> dict[str, Any]:
    """Start the daemons, run one timed round against them, stop them, check the store."""
    label, location, size = config.label, config.location, args.warmup + args.n
    with ExitStack() as stack:
        daemons: list[Daemon] = [stack.enter_context(running(s, CHALLENGE, env=config.env)) for s in config.states]
        urls = [d.url for d in daemons]
        ca_certs = loadgen.fetch_ca(urls[0])
        messages = build_messages(urls[0], keys, size, f"{label}{number}", lambda cn: CHALLENGE)
        meter = Meter([d.proc.pid for d in daemons], postgres.pid if location.startswith("postgresql") else None)
        with profiling(args.profile, f"{label}{number}", [d.proc.pid for d in daemons]):
            elapsed, cpu, latencies, replies = trio.run(
                loadgen.timed_post_all, urls, messages, args.c, args.warmup, meter
            )
        for d in daemons:
            assert d.alive(), d.log()
    # Daemons stopped: what the store holds now is what survived them.
    serials: list[int] = []
    _, warm_failures = loadgen.check(messages[: args.warmup], replies[: args.warmup], ca_certs, serials)
    ok, failures = loadgen.check(messages[args.warmup :], replies[args.warmup :], ca_certs, serials)
    in_store = stored_serials(location)
    missing = len(set(serials) - in_store)
    for name, count in warm_failures.items():
        failures["warm-up " + name] = count
    n = args.n
    result: dict[str, Any] = {
        "label": label,
        "round": number,
        "n": n,
        "ok": ok,
        "answered": len(serials),
        "missing": missing,
        "rows": len(in_store),
        "failures": failures,
        "seconds": elapsed,
        "rate": n / elapsed,
        "p50_ms": loadgen.pct(latencies, 50) * 1000,
        "p99_ms": loadgen.pct(latencies, 99) * 1000,
        "idle_share": cpu["idle"] / (cpu["idle"] + cpu["busy"]),
        "switches": cpu["switches"] / n,
    }
    for group in Meter.GROUPS:
        result[group + "_ms"] = cpu[group] / n * 1000
    return result


def _ours(r: dict[str, Any]) -> float:
    """CPU ms per enrollment of this run's processes (the rest of the machine left out)."""
    return float(sum(r[g + "_ms"] for g in Meter.GROUPS if g != "other"))


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"{args.c} clients; {args.n} timed static-challenge enrollments per round after {args.warmup} untimed; "
        f"server.processes = {args.processes}, token.workers = {args.workers}"
    )
    print("A = SQLite, B = PostgreSQL (psycopg implementation after the dash), C = two daemons on one database")
    print(
        "CPU ms per enrollment: daemon = serving processes less their store threads, store = the threads that own "
        "the store's connections, token = token workers, pg = PostgreSQL server, loadgen, other = rest of the machine; "
        "cs = the machine's context switches per enrollment"
    )
    print(
        f"{'round':>12} {'ok':>5} {'stored':>9} {'enroll/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'daemon':>7} "
        f"{'store':>6} {'token':>6} {'pg':>6} {'loadgen':>8} {'other':>6} {'idle':>5} "
        f"{'cs':>4} {'x/A':>5} {'cpu x/A':>8}"
    )
    labels = list(dict.fromkeys(r["label"] for r in rounds))
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    cpu_ratios: dict[str, list[float]] = {label: [] for label in labels}
    by_round = {(r["label"], r["round"]): r for r in rounds}
    for r in rounds:
        shown = cpu_shown = ""
        a = by_round.get(("A", r["round"]))
        if r["label"] != "A" and a is not None:
            ratio, cpu_ratio = r["rate"] / a["rate"], _ours(a) / _ours(r)
            ratios[r["label"]].append(ratio)
            cpu_ratios[r["label"]].append(cpu_ratio)
            shown, cpu_shown = f"{ratio:.2f}", f"{cpu_ratio:.2f}"
        name, stored = f"{r['label']} {r['round']}", f"{r['answered'] - r['missing']}/{r['answered']}"
        print(
            f"{name:>12} {r['ok']:>5} {stored:>9} {r['rate']:>9.1f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} "
            f"{r['daemon_ms']:>7.2f} {r['store_ms']:>6.2f} {r['token_ms']:>6.2f} {r['postgres_ms']:>6.2f} "
            f"{r['loadgen_ms']:>8.2f} {r['other_ms']:>6.2f} {r['idle_share']:>5.0%} {r['switches']:>4.0f} "
            f"{shown:>5} {cpu_shown:>8}"
        )
        if r["failures"]:
            print("       failures: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["failures"].items())))
        if r["missing"]:
            print(f"       {r['missing']} answered certificates are NOT in the store")
    for label in labels:
        if ratios[label]:
            print(
                f"{label} / A rate per round: {', '.join(f'{x:.2f}' for x in ratios[label])}; median "
                f"{statistics.median(ratios[label]):.2f}; predicted by CPU alone: median "
                f"{statistics.median(cpu_ratios[label]):.2f}"
            )
    print("mean CPU ms per enrollment by configuration:")
    for label in labels:
        mine = [r for r in rounds if r["label"] == label]
        parts = " ".join(f"{g} {statistics.mean(r[g + '_ms'] for r in mine):.2f}" for g in Meter.GROUPS)
        print(
            f"  {label}: {parts}; ours {statistics.mean(_ours(r) for r in mine):.2f}; context switches "
            f"{statistics.mean(r['switches'] for r in mine):.0f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=400, help="timed enrollments per round")
    ap.add_argument("-c", type=int, default=16, help="concurrent clients")
    ap.add_argument("--warmup", type=int, default=32, help="untimed enrollments before each round's clock")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of A, B (and C)")
    ap.add_argument("--nodes", action="store_true", help="also C: two daemons on one PostgreSQL database")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="server.processes (init's default)")
    ap.add_argument("--workers", type=int, default=1, help="token.workers per process (init's default)")
    ap.add_argument("--keys", type=int, default=16, help="client keys, reused across messages")
    ap.add_argument(
        "--psycopg",
        default="",
        help="PSYCOPG_IMPL for the PostgreSQL daemons, or several (python,binary): a B configuration each; C uses "
        "the first (default: whatever psycopg picks)",
    )
    ap.add_argument("--profile", type=Path, help="py-spy every timed window into this directory (skews rates)")
    ap.add_argument("--json", type=Path, help="also write every round's figures to this file")
    args = ap.parse_args()

    keys = loadgen.client_keys(args.keys)
    impls = [i for i in args.psycopg.split(",") if i]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scepd-pg-bench-") as tmp, postgres_server() as postgres:
        root = Path(tmp)
        a = root / "a"
        init_state(a, CHALLENGE, workers=args.workers, processes=args.processes)
        configs = [Configuration("A", [a], str(a / "scepd.sqlite3"))]
        wanted = [("B", 1, impl) for impl in impls or [""]] + (
            [("C", 2, impls[0] if impls else "")] if args.nodes else []
        )
        for label, count, impl in wanted:
            url = postgres.url(postgres.create_database())
            name = f"{label}-{impl}" if impl else label
            states = [root / f"{name}-{i}" for i in range(count)]
            for state in states:
                init_state(state, CHALLENGE, workers=args.workers, processes=args.processes)
                use_database(state, url)
            configs.append(Configuration(name, states, url, {"PSYCOPG_IMPL": impl} if impl else {}))
        for number in range(1, args.rounds + 1):
            # A B C, then C B A, ...: a drift of the machine's speed weighs on both sides of a ratio alike.
            for config in configs if number % 2 else configs[::-1]:
                rounds.append(round_(config, postgres, keys, args, number))
                r = rounds[-1]
                print(
                    f"{config.label} {number}: {r['rate']:.1f}/s ok {r['ok']}/{r['n']} missing {r['missing']}",
                    file=sys.stderr,
                    flush=True,
                )
    report(rounds, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}))
    failed = any(r["ok"] != r["n"] or r["missing"] or r["failures"] for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
