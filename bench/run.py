"""scepd's default install against micromdm's scepserver, with a CA key of the same size (issue 15).

    .venv/bin/python -m bench.run [-n 400] [--rounds 3] [--concurrency 8,16] [--ca-bits 3072]
                                   [--micromdm-ca-bits BITS] [--scepd default[,WxP...]]

scepd is set up exactly as a new user gets it: `scepd init --key-size BITS`
(a sign-only CA key of BITS and an RSA-2048 RA on a SoftHSM2 token, and the
serving layout, `server.processes` and `token.workers`, that init writes for
this machine's cores). micromdm's `scepserver` (Debian package `scep`, its CA
key in process memory) gets a depot with a CA key of the same size
(--micromdm-ca-bits to give it another, e.g. 2048, its fastest).

For every round and every concurrency the servers run in turn, micromdm
first (fresh depot each time), then each scepd variant, so a slow spell of
the shared machine hits both sides of a ratio. bench/loadgen.py drives each:
fresh RSA-2048 clients, every message built before the clock starts, the
server's CPU read from /proc over the timed window (token worker processes
apart), the load generator's own CPU printed so one can see it is small.

Printed: every run; per concurrency the per-round ratios scepd/micromdm with
their median and spread; failed enrollments; server CPU per enrollment split
into the token worker processes and the rest. --scepd adds variants of the
same state as WORKERSxPROCESSES (token.workers x server.processes), e.g.
`--scepd default,0x1,1x2`, to compare serving layouts in the same rounds.

Everything listens on 127.0.0.1. scepserver binds the wildcard address, so as
root the run re-executes itself in a private network namespace (`unshare
--net`, loopback only); --no-netns keeps the host's. Every server started is
stopped (its process group) on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import client_keys
from tests.support.external.reference_server import SCEPSERVER, start_scepserver, wait_for_scep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PY = sys.executable
CHALLENGE = "bench-challenge"
NETNS_MARK = "SCEPD_BENCH_NETNS"
MICROMDM = "micromdm"


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a step; its output is shown if it fails."""
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False, **kw
    )
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def machine_facts() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    dirty = out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "scepd"])
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "scepd commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) + (" (dirty)" if dirty else ""),
        "softhsm2": out(["dpkg-query", "-W", "-f", "${Version}", "softhsm2"]),
        "scep (micromdm)": out(["dpkg-query", "-W", "-f", "${Version}", "scep"]),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# --- servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started and everything in its process group (token workers, serving processes)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # children that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def setup_scepd(state: Path, ca_bits: int) -> Path:
    """`scepd init` as a new user runs it, with the CA key size asked for; nothing changed afterwards."""
    scepd = str(Path(PY).with_name("scepd"))
    run(
        [scepd, "init", "--state", str(state), "--listen", "127.0.0.1:0", "--challenge", CHALLENGE]
        + ["--key-size", str(ca_bits)],
        300,
    )
    config = state / "scepd.toml"
    run([scepd, "config", "check", "--config", str(config)], 60)
    return config


def layout_of(config: Path) -> tuple[int, int]:
    """(token.workers, server.processes) as the config says."""
    text = config.read_text()
    workers = re.search(r"(?m)^workers = (\d+)$", text)
    processes = re.search(r"(?m)^processes = (\d+)$", text)
    return int(workers.group(1)) if workers else 0, int(processes.group(1)) if processes else 1


def variant_config(config: Path, variant: str) -> Path:
    """The config for a variant: `default` is init's own; WxP rewrites token.workers and server.processes."""
    if variant == "default":
        return config
    workers, processes = (int(x) for x in variant.split("x"))
    text, count = re.subn(r"(?m)^workers = \d+$", f"workers = {workers}", config.read_text())
    text, count2 = re.subn(r"(?m)^processes = \d+$", f"processes = {processes}", text)
    if count != 1 or count2 != 1:
        raise RuntimeError(f"{config}: expected one 'workers = N' and one 'processes = N' line")
    out = config.with_name(f"scepd-{variant}.toml")
    out.write_text(text)
    return out


@contextmanager
def scepd_server(config: Path, name: str, timeout: float = 90) -> Iterator[Server]:
    scepd = str(Path(PY).with_name("scepd"))
    out, err = config.with_suffix(".stdout"), config.with_suffix(".log")
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [scepd, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    try:
        deadline, url = time.monotonic() + timeout, None
        while url is None:
            m = re.search(r"serving SCEP at (http://127\.0\.0\.1:\d+/scep)\b", out.read_text())
            if m:
                url = m.group(1)
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scepd ({config.name}) did not start:\n{err.read_text()[-3000:]}")
            else:
                time.sleep(0.1)
        wait_for_scep(url, proc=proc)
        yield Server(name, url, proc)
    finally:
        stop(proc)


@contextmanager
def micromdm_server(workdir: Path, ca_bits: int) -> Iterator[Server]:
    """scepserver on a fresh depot whose CA key has `ca_bits`, at its default log level."""
    workdir.mkdir(parents=True, exist_ok=True)
    depot = workdir / "depot"
    run(
        [SCEPSERVER, "ca", "-init", "-depot", str(depot), "-keySize", str(ca_bits)]
        + ["-organization", "scep reference", "-country", "US"],
        300,
        cwd=workdir,
    )
    url, proc = start_scepserver(workdir, depot, ["-challenge", CHALLENGE])
    try:
        yield Server(MICROMDM, url, proc)
    finally:
        stop(proc)


def loadgen(server: Server, n: int, c: int, warmup: int, keys: Path, timeout: float) -> dict[str, Any]:
    argv = [PY, "-m", "bench.loadgen", "--url", server.url, "--challenge", CHALLENGE, "-n", str(n)]
    argv += ["-c", str(c), "--warmup", str(warmup), "--pid", str(server.proc.pid), "--keys", str(keys)]
    p = subprocess.run(
        argv + ["--label", server.name, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen against {server.name} c={c} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["server"] = server.name
    return result


# --- report -------------------------------------------------------------------------------------


def failed(r: dict[str, Any]) -> int:
    return int(r["n"] - r["ok"] + sum(r.get("warmup_failures", {}).values()))


def ok_rate(r: dict[str, Any]) -> float:
    """Certificates issued per second: a failed request is no enrollment (scepserver's file depot fails
    some under concurrency, and a failure is cheaper than an issued certificate)."""
    return float(r["ok"] / r["seconds"])


def run_line(r: dict[str, Any]) -> str:
    cpu, token = r["server_cpu_ms"], r.get("token_cpu_ms") if r["server"] != MICROMDM else None
    split = "-" if cpu is None else f"{cpu:.2f}"
    if cpu is not None and token:
        split += f" = {token:.2f} + {cpu - token:.2f}"
    return (
        f"{r['round'] + 1:>5} {r['c']:>3} {r['server']:<16} {ok_rate(r):>8.1f} {r['ok']:>4}/{r['n']:<4} "
        f"{failed(r):>6} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {split:>22} "
        f"{r['client_cpu_ms']:>7.2f} {r['client_cores']:>6.3f}"
    )


def report(facts: dict[str, str], runs: list[dict[str, Any]], variants: list[str], ca_bits: int, mm_bits: int) -> str:
    lines = ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()), ""]
    head = (
        f"{'round':>5} {'c':>3} {'server':<16} {'issued/s':>8} {'ok/n':>9} {'failed':>6} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'srv CPU ms = token + rest':>22} {'lg ms':>7} {'lg cores':>6}"
    )
    lines += [
        f"Every run (CA RSA-{ca_bits} for scepd, RSA-{mm_bits} for micromdm; fresh RSA-2048 clients; CPU per "
        "enrollment; token = scepd's token worker processes or token thread; lg = the load generator's own CPU):",
        head,
        "-" * len(head),
    ]
    lines += [run_line(r) for r in runs]
    lines += ["", "Per-round ratio of certificates issued per second, scepd / micromdm:"]
    met = True
    by = {(r["round"], r["c"], r["server"]): r for r in runs}
    for c in sorted({r["c"] for r in runs}):
        for variant in variants:
            ratios, fails, cpu, token = [], 0, [], []
            for i in sorted({r["round"] for r in runs}):
                s, m = by.get((i, c, f"scepd {variant}")), by.get((i, c, MICROMDM))
                if s is None:
                    continue
                fails += failed(s)
                cpu.append(s["server_cpu_ms"])
                if s.get("token_cpu_ms"):
                    token.append(s["token_cpu_ms"])
                if m is not None:
                    ratios.append(ok_rate(s) / ok_rate(m))
            if not ratios:
                continue
            med = statistics.median(ratios)
            ok = med >= 1.0 and fails == 0
            met &= ok
            cpu_text = f"server CPU {statistics.median(cpu):.2f} ms/enrollment"
            if token:
                cpu_text += f" (token {statistics.median(token):.2f}, rest {statistics.median(cpu) - statistics.median(token):.2f})"
            lines.append(
                f"  c={c:<3} scepd {variant:<8} rounds {', '.join(f'{x:.2f}' for x in ratios)}; median {med:.2f}, "
                f"spread {min(ratios):.2f}-{max(ratios):.2f}; failed {fails}; {cpu_text}; "
                f"{'target met' if ok else 'target NOT met'}"
            )
    mm = [r for r in runs if r["server"] == MICROMDM]
    if mm:
        lines.append(
            f"  micromdm: server CPU {statistics.median(r['server_cpu_ms'] for r in mm):.2f} ms/enrollment (median); "
            f"failed {sum(failed(r) for r in mm)}"
        )
    lg = [r["client_cores"] for r in runs]
    lines.append(f"  load generator's own CPU in the timed window: {min(lg):.3f} to {max(lg):.3f} cores")
    lines.append(
        f"Target (median ratio >= 1.0 at every concurrency, no failed enrollment): {'met' if met else 'NOT met'}"
    )
    return "\n".join(lines)


def in_netns() -> bool:
    return os.environ.get(NETNS_MARK) == "1"


def reexec_in_netns() -> None:
    """Re-run this command in a new network namespace that has only loopback."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        log("unshare/ip not found: running in the host network namespace")
        return
    probe = subprocess.run(
        [unshare, "--net", ip, "link", "set", "lo", "up"], capture_output=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        log("cannot create a network namespace: running in the host network namespace")
        return
    env = dict(os.environ, **{NETNS_MARK: "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # `-m bench.run` again
    argv = [PY, "-m", "bench.run", *sys.argv[1:]]
    os.execvpe(unshare, [unshare, "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=400, help="timed enrollments per server, concurrency and round (400)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed enrollments before each run (20)")
    ap.add_argument("--concurrency", default="8,16", help="comma-separated client counts (8,16)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--ca-bits", type=int, choices=[2048, 3072, 4096], default=3072, help="CA RSA key size, both sides")
    ap.add_argument("--micromdm-ca-bits", type=int, choices=[2048, 3072, 4096], help="micromdm's CA size instead")
    ap.add_argument("--scepd", default="default", help="scepd variants: default and/or WORKERSxPROCESSES (default)")
    ap.add_argument("--skip-micromdm", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the state in this directory (default: a removed temp dir)")
    ap.add_argument("--json-out", type=Path, help="also write every run here")
    ap.add_argument("--timeout", type=float, default=3600, help="limit for the whole run, seconds (3600)")
    ap.add_argument("--no-netns", action="store_true", help="do not run in a private network namespace")
    ap.add_argument("--from-json", type=Path, help="print the report of an earlier run's --json-out, run nothing")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        a = saved["args"]
        bits = a["micromdm_ca_bits"] or a["ca_bits"]
        print(report(saved["machine"], saved["runs"], a["scepd"].split(","), a["ca_bits"], bits))
        return 0

    if not args.no_netns and not in_netns() and os.geteuid() == 0:
        reexec_in_netns()  # returns only when it cannot
    concurrency = [int(c) for c in args.concurrency.split(",")]
    variants = args.scepd.split(",")
    mm_bits = args.micromdm_ca_bits or args.ca_bits

    def expired(*_: object) -> None:
        raise TimeoutError(f"the benchmark exceeded --timeout {args.timeout:.0f} s")

    signal.signal(signal.SIGALRM, expired)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the servers are stopped
    signal.alarm(int(args.timeout))
    started = time.monotonic()
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="scepd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        facts = machine_facts()
        log(f"state in {work}")
        config = setup_scepd(work / "scepd", args.ca_bits)
        workers, processes = layout_of(config)
        facts["scepd init layout"] = f"token.workers = {workers}, server.processes = {processes}"
        configs = {v: variant_config(config, v) for v in variants}
        # Fresh clients: every (round, concurrency) has its own keys, so no server sees a key twice.
        keys = {(i, c): work / f"client-keys-r{i}-c{c}.bin" for i in range(args.rounds) for c in concurrency}
        log(f"generating {len(keys) * (args.warmup + args.n)} RSA-2048 client keys")
        for path in keys.values():
            client_keys(args.warmup + args.n, path)

        step_timeout = max(300.0, args.n * 0.5)
        runs: list[dict[str, Any]] = []

        def measure(server: Server, i: int, c: int) -> None:
            r = loadgen(server, args.n, c, args.warmup, keys[(i, c)], step_timeout)
            r["round"] = i
            runs.append(r)
            log(run_line(r))

        for i in range(args.rounds):
            for c in concurrency:
                if not args.skip_micromdm:
                    with micromdm_server(work / f"micromdm-r{i}-c{c}", mm_bits) as server:
                        measure(server, i, c)
                for v in variants:
                    with scepd_server(configs[v], f"scepd {v}") as server:
                        measure(server, i, c)

        facts["duration"] = f"{time.monotonic() - started:.0f} s"
        print(report(facts, runs, variants, args.ca_bits, mm_bits), flush=True)
        if args.json_out:
            args.json_out.write_text(
                json.dumps(
                    {
                        "machine": facts,
                        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                        "runs": runs,
                    },
                    indent=2,
                )
                + "\n"
            )
        return 0
    finally:
        signal.alarm(0)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
