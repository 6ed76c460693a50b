"""The whole benchmark on this machine, in one command: scepd against micromdm's scepserver.

    .venv/bin/python -m bench.run [-n 500] [--warmup 20] [--concurrency 1,4,16] [--scepd 0x1,2x1,0x2] [--rounds 3]

It creates a throw-away scepd state (`scepd init`, then an RSA-2048 CA key on
the token, so that both servers sign with RSA-2048), then for each server in
turn: each scepd variant of --scepd (`token.workers` x `server.processes`:
by default one token thread, two token worker processes, and two serving
processes each with its own token thread), and micromdm's `scepserver` (Debian package `scep`, CA key in process memory)
with an RSA-2048 depot. Each is started, enrolled by bench/loadgen.py at every
concurrency (fresh RSA-2048 clients, the server's CPU read from /proc via
--pid), and stopped. Then bench/token_signs.py measures the raw RSA-2048
operations of the same token, and (unless --skip-floor) bench/http_floor.py
and bench/pipeline_cpu.py measure the floor: the HTTP stack with an empty
handler, and scepd's own pipeline without HTTP and token. That is one round; the rounds interleave the
servers so that a slow spell of a shared machine hits all of them, and the
one table printed at the end gives the median of each figure over the
rounds (and the spread of the rate). --json-out writes every round too.

Everything listens on 127.0.0.1 only. scepserver cannot be told an address
(it binds the wildcard), so by default the whole run re-executes itself in a
private network namespace (`unshare --net`, loopback only) when it can;
--no-netns runs it in the host namespace. Every step has a time limit, the
whole run has --timeout, and every server started is stopped (its process
group: SIGTERM, then SIGKILL) on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from tests.support.external.reference_server import SCEPSERVER, free_port, wait_for_scep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PY = sys.executable
SCEPD = str(Path(PY).with_name("scepd"))
CHALLENGE = "bench-challenge"
NETNS_MARK = "SCEPD_BENCH_NETNS"


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a step; its output is kept and shown if it fails."""
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False, **kw
    )
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


# --- machine facts ------------------------------------------------------------------------------


def _out(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_facts() -> dict[str, str]:
    from importlib.metadata import version

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    dirty = _out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "scepd"])
    facts = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb // 1024} MiB",
        "kernel": platform.release(),
        "os": _out(["sh", "-c", '. /etc/os-release && echo "$PRETTY_NAME"']),
        "python": platform.python_version(),
        "scepd commit": _out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        + (" (scepd/ has uncommitted changes)" if dirty else ""),
        "softhsm2": _out(["dpkg-query", "-W", "-f", "${Version}", "softhsm2"]),
        "scep (micromdm)": _out(["dpkg-query", "-W", "-f", "${Version}", "scep"]),
        "openssl": _out(["openssl", "version"]),
    }
    for dist in ("python-pkcs11", "cryptography", "asn1crypto", "trio", "hypercorn", "quart-trio", "httpx"):
        try:
            facts[dist] = version(dist)
        except Exception:  # noqa: BLE001
            facts[dist] = "?"
    return facts


# --- servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started and everything in its process group (token workers)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # token workers that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def setup_scepd(state: Path) -> Path:
    """`scepd init`, then an RSA-2048 CA key on its token (init makes RSA-3072)."""
    init_help = run([SCEPD, "init", "--help"], 60).stdout
    argv = [SCEPD, "init", "--state", str(state), "--listen", "127.0.0.1:0", "--challenge", CHALLENGE]
    native = "--key-size" in init_help
    if native:
        argv += ["--key-type", "rsa", "--key-size", "2048"]
    run(argv, 180)
    config = state / "scepd.toml"
    if not native:
        text = config.read_text()
        text = text.replace("object=scepd-ca;", "object=bench-ca-rsa2048;")
        text = text.replace('certificate = "ca.pem"', 'certificate = "ca-rsa2048.pem"')
        config.write_text(text)
        run(
            [
                SCEPD,
                "ca",
                "init",
                "--config",
                str(config),
                "--key-type",
                "rsa",
                "--key-size",
                "2048",
                "--subject",
                "CN=scepd bench CA (RSA-2048),O=scepd",
            ],
            180,
        )
    run([SCEPD, "config", "check", "--config", str(config)], 60)
    return config


def with_workers(config: Path, workers: int, processes: int = 1) -> Path:
    text, count = re.subn(r"(?m)^workers = \d+$", f"workers = {workers}", config.read_text())
    if count != 1:
        raise RuntimeError(f"{config}: no single 'workers = N' line under [token]")
    text, count = re.subn(r"(?m)^processes = \d+$", f"processes = {processes}", text)
    if count == 0:  # a config from before `scepd init --processes`
        text, count = re.subn(r"(?m)^\[server\]$", f"[server]\nprocesses = {processes}", text)
    if count != 1:
        raise RuntimeError(f"{config}: no single 'processes = N' line or [server] table")
    out = config.with_name(f"scepd-workers{workers}-processes{processes}.toml")
    out.write_text(text)
    return out


@contextmanager
def scepd_server(config: Path, workers: int, processes: int = 1, timeout: float = 60) -> Iterator[Server]:
    cfg = with_workers(config, workers, processes)
    out, err = cfg.with_suffix(".stdout"), cfg.with_suffix(".log")
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [SCEPD, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
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
                raise RuntimeError(f"scepd (workers={workers}) did not start:\n{err.read_text()[-3000:]}")
            else:
                time.sleep(0.1)
        wait_for_scep(url, proc=proc)
        yield Server(f"scepd w={workers} p={processes}", url, proc, err)
    finally:
        stop(proc)


@contextmanager
def micromdm_server(workdir: Path) -> Iterator[Server]:
    """scepserver with a fresh RSA-2048 depot, as tests/support/external/reference_server.py starts it,
    without -debug (each server logs at its default level)."""
    workdir.mkdir(parents=True, exist_ok=True)
    depot = workdir / "depot"
    run(
        [
            SCEPSERVER,
            "ca",
            "-init",
            "-depot",
            str(depot),
            "-keySize",
            "2048",
            "-organization",
            "scep reference",
            "-country",
            "US",
        ],
        120,
        cwd=workdir,
    )
    log_path = workdir / "scepserver.log"
    for attempt in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}/scep"
        with open(log_path, "ab") as f:
            proc = subprocess.Popen(
                [SCEPSERVER, "-depot", str(depot), "-port", str(port), "-challenge", CHALLENGE],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
            )
        try:
            wait_for_scep(url, proc=proc)
        except (RuntimeError, TimeoutError) as e:
            stop(proc)
            if attempt == 4:
                raise RuntimeError("scepserver did not start:\n" + log_path.read_text(errors="replace")[-3000:]) from e
            continue
        break
    try:
        yield Server("micromdm scepserver", url, proc, log_path)
    finally:
        stop(proc)


# --- measurements -------------------------------------------------------------------------------


def loadgen(server: Server, n: int, c: int, warmup: int, keys: Path, timeout: float) -> dict[str, Any]:
    p = subprocess.run(
        [
            PY,
            "-m",
            "bench.loadgen",
            "--url",
            server.url,
            "--challenge",
            CHALLENGE,
            "-n",
            str(n),
            "-c",
            str(c),
            "--warmup",
            str(warmup),
            "--pid",
            str(server.proc.pid),
            "--keys",
            str(keys),
            "--label",
            server.name,
            "--json",
        ],
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


def token_signs(config: Path, ops: int, workers: list[int], timeout: float) -> dict[str, Any]:
    p = run(
        [
            PY,
            "-m",
            "bench.token_signs",
            "--config",
            str(config),
            "-n",
            str(ops),
            "--workers",
            ",".join(map(str, workers)),
            "--json",
        ],
        timeout,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- report -------------------------------------------------------------------------------------


def floor(requests: int, timeout: float) -> dict[str, float]:
    """What no enrollment code can go below: the HTTP stack with an empty handler (bench/http_floor.py, at
    concurrency 4) and scepd's own pipeline without HTTP and without the token (bench/pipeline_cpu.py)."""
    p = run([PY, "-m", "bench.http_floor", "-n", str(requests), "-c", "4", "--json"], timeout)
    out = {f"http_{r['stack']}_ms": r["server_cpu_ms"] for r in map(json.loads, p.stdout.strip().splitlines())}
    p = run([PY, "-m", "bench.pipeline_cpu", "-n", "300", "--json"], timeout)
    out["pipeline_ms"] = json.loads(p.stdout.strip().splitlines()[-1])["own_cpu_ms"]
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, concurrency): the median over rounds, and the spread of the rate."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["server"], r["c"]), []).append(r)
    rows = []
    for (server, c), rs in groups.items():
        failures: dict[str, int] = {}
        for r in rs:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        cpu = [r["server_cpu_ms"] for r in rs if r["server_cpu_ms"] is not None]
        rows.append(
            {
                "server": server,
                "c": c,
                "rounds": len(rs),
                "n": sum(r["n"] for r in rs),
                "ok": sum(r["ok"] for r in rs),
                "failures": failures,
                "rate": median([r["rate"] for r in rs]),
                "rate_min": min(r["rate"] for r in rs),
                "rate_max": max(r["rate"] for r in rs),
                "p50_ms": median([r["p50_ms"] for r in rs]),
                "p95_ms": median([r["p95_ms"] for r in rs]),
                "p99_ms": median([r["p99_ms"] for r in rs]),
                "server_cpu_ms": median(cpu) if cpu else None,
                "client_cpu_ms": median([r["client_cpu_ms"] for r in rs]),
            }
        )
    return rows


def aggregate_token(tokens: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not tokens:
        return None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tokens:
        for r in t["results"]:
            groups.setdefault((r["mode"], r["op"]), []).append(r)
    results = [
        {
            "mode": mode,
            "op": op,
            "tasks": rs[0]["tasks"],
            "n": rs[0]["n"],
            "rounds": len(rs),
            "per_second": median([r["per_second"] for r in rs]),
            "cpu_ms": median([r["cpu_ms"] for r in rs]),
        }
        for (mode, op), rs in groups.items()
    ]
    return {k: v for k, v in tokens[0].items() if k != "results"} | {"results": results}


def report(
    facts: dict[str, str],
    rows: list[dict[str, Any]],
    token: dict[str, Any] | None,
    floors: list[dict[str, float]] | None = None,
) -> str:
    lines = ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), ""]
    ops = {(r["mode"], r["op"]): r for r in token["results"]} if token else {}
    three = None
    if ("direct", "sign") in ops and ("direct", "unwrap") in ops:
        three = 2 * ops[("direct", "sign")]["cpu_ms"] + ops[("direct", "unwrap")]["cpu_ms"]
    rounds = max((r["rounds"] for r in rows), default=0)
    head = (
        f"{'server':<20} {'c':>3} {'n':>5} {'ok':>5} {'enroll/s':>9} {'(min-max)':>13} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'p99 ms':>7} {'srv CPU ms':>10} {'/token':>6} {'client CPU':>10}"
    )
    title = (
        f"Enrollments (bench/loadgen.py, fresh RSA-2048 clients, RSA-2048 CA; median of {rounds} rounds; "
        "CPU per enrollment; /token = server CPU over the token's CPU for 2 signs + 1 decrypt):"
    )
    lines += [title, head, "-" * len(head)]
    for r in rows:
        cpu = r["server_cpu_ms"]
        ratio = f"{cpu / three:.2f}" if three and cpu is not None else "-"
        spread = f"({r['rate_min']:.0f}-{r['rate_max']:.0f})"
        lines.append(
            f"{r['server']:<20} {r['c']:>3} {r['n']:>5} {r['ok']:>5} {r['rate']:>9.1f} {spread:>13} "
            f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} "
            f"{'-' if cpu is None else format(cpu, '.2f'):>10} {ratio:>6} {r['client_cpu_ms']:>10.2f}"
        )
        if r["failures"]:
            lines.append(f"{'':<25}failures: " + ", ".join(f"{k} x{v}" for k, v in r["failures"].items()))
    if token:
        title = (
            f"Token (bench/token_signs.py): {token['token']} {token['module']}, key {token['key']} "
            f"RSA-{token['key_bits']}; median of {token['results'][0]['rounds']} rounds:"
        )
        lines += ["", title]
        head = f"{'mode':<12} {'op':<8} {'tasks':>5} {'n':>6} {'ops/s':>9} {'CPU ms/op':>10}"
        lines += [head, "-" * len(head)]
        for r in token["results"]:
            lines.append(
                f"{r['mode']:<12} {r['op']:<8} {r['tasks']:>5} {r['n']:>6} {r['per_second']:>9.1f} {r['cpu_ms']:>10.3f}"
            )
    lines.append("")
    if three:
        lines.append(
            f"Token CPU for one enrollment's three private-key operations (2 signs + 1 decrypt, direct): "
            f"{three:.2f} ms; target: server CPU <= 1.5x = {1.5 * three:.2f} ms/enrollment."
        )
    reference = {r["c"]: r for r in rows if str(r["server"]).startswith("micromdm")}
    for r in rows:
        if str(r["server"]).startswith("scepd"):
            ref = reference.get(r["c"])
            parts = [f"{r['server']} c={r['c']}:"]
            if ref:
                rate, ref_rate = r["rate"], ref["rate"]
                parts.append(
                    f"{rate:.1f}/s vs micromdm {ref_rate:.1f}/s ({rate / ref_rate:.2f}x, "
                    f"{'met' if rate >= ref_rate else 'NOT met'});"
                )
            if three and r["server_cpu_ms"] is not None:
                cpu = r["server_cpu_ms"]
                parts.append(
                    f"CPU {cpu:.2f} ms/enrollment = {cpu / three:.2f}x the token "
                    f"({'met' if cpu <= 1.5 * three else 'NOT met'})"
                )
            lines.append(" ".join(parts))
    if floors:
        fl = {k: median([f[k] for f in floors]) for k in floors[0]}
        lines += [
            "",
            f"Floor (median of {len(floors)} rounds), CPU ms per request or enrollment:",
            f"  HTTP stack, empty handler (bench/http_floor.py, c=4): hypercorn {fl['http_asgi_ms']:.2f}, "
            f"hypercorn + quart-trio {fl['http_quart_ms']:.2f}",
            f"  scepd's own pipeline, no HTTP, no token (bench/pipeline_cpu.py): {fl['pipeline_ms']:.2f}",
        ]
        if three:
            least = three + fl["http_quart_ms"]
            lines.append(
                f"  token + HTTP stack = {least:.2f} of the {1.5 * three:.2f} ms target, leaving "
                f"{1.5 * three - least:.2f} ms for the SCEP work that measures {fl['pipeline_ms']:.2f} "
                f"in process; token + HTTP + pipeline = {least + fl['pipeline_ms']:.2f} ms"
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
        log("cannot create a network namespace (needs root): running in the host network namespace")
        return
    script = 'ip link set lo up && exec "$@"'
    env = dict(os.environ, **{NETNS_MARK: "1"})
    os.execvpe(unshare, [unshare, "--net", "sh", "-c", script, "sh", PY, *sys.argv], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500, help="timed enrollments per server, concurrency and round (500)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed enrollments before each run (default 20)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument(
        "--scepd",
        default="0x1,2x1,0x2",
        help="scepd variants as WORKERSxPROCESSES: token.workers by server.processes (default 0x1,2x1,0x2)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; each starts every server in turn, and the table gives the medians (default 3)",
    )
    ap.add_argument("--token-ops", type=int, default=2000, help="operations per raw token measurement")
    ap.add_argument("--skip-micromdm", action="store_true")
    ap.add_argument(
        "--floor-requests",
        type=int,
        default=2000,
        help="requests per HTTP-stack floor measurement (bench/http_floor.py)",
    )
    ap.add_argument("--skip-floor", action="store_true", help="do not measure the HTTP stack and pipeline floor")
    ap.add_argument("--keep", type=Path, help="keep the state in this directory (default: a removed temp dir)")
    ap.add_argument("--json-out", type=Path, help="also write every figure, every round, here")
    ap.add_argument("--timeout", type=float, default=2700, help="limit for the whole run, seconds (default 2700)")
    ap.add_argument("--no-netns", action="store_true", help="do not run in a private network namespace")
    args = ap.parse_args()

    if not args.no_netns and not in_netns() and os.geteuid() == 0:
        reexec_in_netns()  # returns only when it cannot
    concurrency = [int(c) for c in args.concurrency.split(",")]
    variants = [tuple(int(x) for x in v.split("x")) for v in args.scepd.split(",")]
    workers = sorted({w for w, _ in variants})

    def expired(*_: object) -> None:
        raise TimeoutError(f"the benchmark exceeded --timeout {args.timeout:.0f} s")

    signal.signal(signal.SIGALRM, expired)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the servers are stopped
    signal.alarm(int(args.timeout))
    started = time.monotonic()

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="scepd-bench-"))
    try:
        facts = machine_facts()
        facts["network"] = "private namespace, loopback only" if in_netns() else "host namespace, 127.0.0.1"
        log(f"state in {work}")
        config = setup_scepd(work / "scepd")
        # Fresh clients: every (round, concurrency) has its own keys, so no server sees a key twice.
        keys = {(i, c): work / f"client-keys-r{i}-c{c}.bin" for i in range(args.rounds) for c in concurrency}
        log(f"generating {len(keys) * (args.warmup + args.n)} RSA-2048 client keys")
        for path in keys.values():
            client_keys(args.warmup + args.n, path)

        step_timeout = max(300.0, args.n * 0.5)
        runs: list[dict[str, Any]] = []
        tokens: list[dict[str, Any]] = []
        floors: list[dict[str, float]] = []

        def measure(server: Server, i: int) -> None:
            for c in concurrency:
                r = loadgen(server, args.n, c, args.warmup, keys[(i, c)], step_timeout)
                r["round"] = i
                cpu = "-" if r["server_cpu_ms"] is None else f"{r['server_cpu_ms']:.2f}"
                log(
                    f"round {i + 1}/{args.rounds} {server.name} c={c}: {r['rate']:.1f}/s ok={r['ok']}/{r['n']} "
                    f"p50={r['p50_ms']:.1f} ms server CPU {cpu} ms/enrollment"
                )
                runs.append(r)

        for i in range(args.rounds):  # rounds interleave the servers, so a slow spell hits all of them
            for w, p in variants:
                with scepd_server(config, w, p) as server:
                    measure(server, i)
            if not args.skip_micromdm:
                with micromdm_server(work / f"micromdm-r{i}") as server:
                    measure(server, i)
            log(f"round {i + 1}/{args.rounds} raw token operations ({args.token_ops} per measurement)")
            tokens.append(token_signs(config, args.token_ops, workers, step_timeout))
            if not args.skip_floor:
                log(f"round {i + 1}/{args.rounds} floor: HTTP stack alone, scepd's pipeline alone")
                floors.append(floor(args.floor_requests, step_timeout))

        facts["duration"] = f"{time.monotonic() - started:.0f} s"
        rows, token = aggregate(runs), aggregate_token(tokens)
        print(report(facts, rows, token, floors), flush=True)
        if args.json_out:
            args.json_out.write_text(
                json.dumps(
                    {
                        "machine": facts,
                        "n": args.n,
                        "warmup": args.warmup,
                        "rounds": args.rounds,
                        "summary": rows,
                        "token": token,
                        "runs": runs,
                        "token_rounds": tokens,
                        "floor_rounds": floors,
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
