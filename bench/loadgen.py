"""SCEP enrollment load generator: N fresh RSA-2048 clients at concurrency C.

Keys, CSRs and PKCSReq messages are all built before the clock starts (a
fresh RSA-2048 key costs the client far more than the server's work), so the
timed window measures the server: POST, wait, check the reply's status. The
replies are then opened and each certificate is checked against the CA
outside the timed window.

    python -m bench.loadgen --url http://127.0.0.1:8080/scep --challenge X -n 400 -c 8 [--pid PID]

With --pid, the server's CPU time (its own and its child processes', such as
token workers) is read from /proc before and after, and reported per enrollment.
The load generator's own CPU time in the timed window is reported too: it
shares the machine with the server.

--warmup W enrolls W extra clients before the clock starts (imports, caches,
connections). --keys FILE keeps the generated client keys in FILE (PKCS#8 DER,
length-prefixed) and reuses them on the next run, so a benchmark that runs the
same load against several servers pays for key generation once; every request
still gets its own subject, transaction ID and nonce. --json prints one JSON
object instead of the text line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scepd.scep import parse_certs_only
from scepd.scep.client import build_pki_message, make_self_signed, parse_cert_rep
from scepd.scep.constants import MessageType, PkiStatus
from tests.support.scep_client import make_csr

_CLK = os.sysconf("SC_CLK_TCK")


def _keygen(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def process_tree(pid: int) -> list[int]:
    """pid and its descendants still running.

    A child is listed under the thread that started it, so every thread's
    `children` file is read: scepd starts token worker processes from a
    Trio worker thread, not from the main thread.
    """
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    return seen


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its descendants still running (token worker processes)."""
    return cpu_split(pid)[0]


def cpu_split(pid: int) -> tuple[float, float]:
    """utime+stime of pid and its descendants: (all of them, the token's part of it)."""
    parts = cpu_parts(pid)
    return sum(parts.values()), parts["token"]


def cpu_parts(pid: int) -> dict[str, float]:
    """utime+stime of pid and its descendants, in seconds, by part: `token`, `store`, `rest`.

    The token's part is exact in both modes: with `token.workers` >= 1 a token worker is a
    process of its own (`scepd.keys.pkcs11.worker`); with 0 it is the serving process's one
    token thread. `store` is the threads that own the store's connections (`scepd-store`, its
    reader beside it: scepd/store/thread.py), which until 2026-12-03 were counted as token.
    `rest` is the event loop, Trio's worker threads and everything else, in every process
    (another server's, such as micromdm's, included).
    """
    parts = {"token": 0, "store": 0, "rest": 0}
    for p in process_tree(pid):
        try:
            ticks = _ticks(f"/proc/{p}/stat")  # the process's threads, the exited ones included
            argv = Path(f"/proc/{p}/cmdline").read_bytes()
            # argv is NUL-separated: `python -m scepd.keys.pkcs11.worker FD`, `python -m scepd serve ...`.
            worker = b"-m\0scepd.keys.pkcs11.worker\0" in argv
            scepd = b"-m\0scepd\0" in argv or b"/scepd\0" in argv  # `python -m scepd`, or the console script
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        if worker:
            parts["token"] += ticks
            continue
        if scepd:
            for tid in tasks:
                if int(tid) == p:
                    continue
                try:
                    name = Path(f"/proc/{p}/task/{tid}/comm").read_text()
                    thread = _ticks(f"/proc/{p}/task/{tid}/stat")
                except OSError:
                    continue
                if name.startswith("scepd-store"):  # comm is cut at 15 characters: scepd-store-rea
                    parts["store"] += thread
                    ticks -= thread
                elif not name.startswith("Trio thread"):
                    parts["token"] += thread
                    ticks -= thread
        parts["rest"] += ticks
    return {k: v / _CLK for k, v in parts.items()}


def _ticks(stat: str) -> int:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def processes_cpu(pids: Sequence[int]) -> float:
    """utime+stime of these processes, in seconds; one that has exited meanwhile counts nothing."""
    total = 0
    for p in pids:
        try:
            total += _ticks(f"/proc/{p}/stat")
        except OSError:
            continue
    return total / _CLK


def machine_cpu() -> tuple[float, float, int]:
    """The whole machine since boot, from /proc/stat: (busy seconds, idle seconds, context switches)."""
    lines = Path("/proc/stat").read_text().splitlines()
    values = [int(v) for v in lines[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    switches = next(int(line.split()[1]) for line in lines if line.startswith("ctxt "))
    return busy / _CLK, idle / _CLK, switches


def fetch_ca(url: str) -> list[x509.Certificate]:
    r = httpx.get(url, params={"operation": "GetCACert"}, timeout=30)
    r.raise_for_status()
    if r.headers["content-type"].startswith("application/x-x509-ca-ra-cert"):
        return parse_certs_only(r.content)
    return [x509.load_der_x509_certificate(r.content)]


def client_keys(n: int, cache: Path | None = None) -> list[rsa.RSAPrivateKey]:
    """n RSA-2048 keys: generated on every core, or the first n kept in `cache`."""
    ders: list[bytes] = []
    if cache is not None and cache.exists():
        data, pos = cache.read_bytes(), 0
        while pos < len(data) and len(ders) < n:
            size = int.from_bytes(data[pos : pos + 4], "big")
            ders.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
    if len(ders) < n:
        with ProcessPoolExecutor() as pool:
            ders += list(pool.map(_keygen, range(n - len(ders)), chunksize=8))
        if cache is not None:
            tmp = cache.with_name(cache.name + ".tmp")
            tmp.write_bytes(b"".join(len(d).to_bytes(4, "big") + d for d in ders))
            tmp.replace(cache)
    # Our own keys, generated above or by an earlier run: the costly consistency check (tens of
    # milliseconds per key on a busy machine, minutes for a benchmark's keys) tells nothing here.
    keys = [serialization.load_der_private_key(d, None, unsafe_skip_rsa_key_validation=True) for d in ders[:n]]
    assert all(isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048 for k in keys)
    return keys  # type: ignore[return-value]


def prepare(
    url: str, challenge: str, n: int, cache: Path | None = None
) -> tuple[list[x509.Certificate], list[tuple[rsa.RSAPrivateKey, bytes]]]:
    ca_certs = fetch_ca(url)
    keys = client_keys(n, cache)
    messages = []
    now = dt.datetime.now(dt.UTC)
    for i, key in enumerate(keys):
        assert isinstance(key, rsa.RSAPrivateKey)
        messages.append((key, pkcs_req(key, f"bench-{i}-{secrets.token_hex(4)}", challenge, ca_certs[0], now)))
    return ca_certs, messages


def pkcs_req(key: rsa.RSAPrivateKey, cn: str, challenge: str, recipient: x509.Certificate, now: dt.datetime) -> bytes:
    """A PKCSReq for CN=`cn` from `key`, enveloped to `recipient` (the RA, or a lone CA), with a fresh
    transactionID and nonce: built before the clock starts, so the load generator's CPU stays out."""
    csr = make_csr(key, cn, challenge)
    return build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=csr.public_bytes(serialization.Encoding.DER),
        transaction_id=secrets.token_hex(16),
        sender_nonce=os.urandom(16),
        recipient_certificate=recipient,
        signer_certificate=make_self_signed(key, csr.subject, now),
        signer_key=key,
    )


class _Connection:
    """One keep-alive HTTP/1.1 connection, spoken with h11 over a raw trio stream.

    httpx's connection pool cost the load generator about 10 ms of CPU per request at 64
    clients (measured with bench/intune_load.py), as much as the server's own event loop: a
    load generator that heavy takes CPU from the server it measures. This costs a few
    hundred microseconds.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def _open(self) -> trio.SocketStream:
        if self.stream is None or self.conn.our_state is not h11.IDLE:
            if self.stream is not None:
                await self.stream.aclose()
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.conn = h11.Connection(h11.CLIENT)
        return self.stream

    async def post(self, target: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """(status, body) of one POST; reconnects first when the server closed the last one."""
        stream = await self._open()
        conn = self.conn
        headers = [
            ("host", f"{self.host}:{self.port}"),
            ("content-type", content_type),
            ("content-length", str(len(body))),
        ]
        head = conn.send(h11.Request(method="POST", target=target, headers=headers))
        data = conn.send(h11.Data(data=body))
        end = conn.send(h11.EndOfMessage())
        assert head is not None and data is not None and end is not None
        await stream.send_all(head + data + end)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                received = await stream.receive_some(65536)
                conn.receive_data(received)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection mid-answer")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        return status, b"".join(chunks)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


async def post_all(
    url: str | Sequence[str],
    messages: Sequence[tuple[Any, bytes]],
    concurrency: int,
    warmup: int,
    window: Callable[[], AbstractContextManager[object]],
) -> tuple[list[float], list[bytes | int]]:
    """POST every message, `concurrency` at a time, one keep-alive connection per client.

    The first `warmup` messages go before the clock (they also open the connections); the rest
    run inside `window()`, where the caller reads its clocks and CPU counters. Returns each timed
    request's latency and each reply (the body, or the HTTP status when it is not 200).

    With several URLs (servers that share one CA, same path) the clients are dealt out to them in
    turn; every client takes the next message when it is free, so a slower server gets fewer.
    """
    urls = [url] if isinstance(url, str) else list(url)
    splits = [urlsplit(u) for u in urls]
    for u, split in zip(urls, splits):
        assert split.scheme == "http" and split.hostname is not None and split.port is not None, u
    assert len({split.path for split in splits}) == 1, urls
    target = (splits[0].path or "/") + "?operation=PKIOperation"
    latencies: list[float] = []
    replies: list[bytes | int] = [b""] * len(messages)
    connections = [
        _Connection(str(splits[i % len(splits)].hostname), int(splits[i % len(splits)].port or 0))
        for i in range(concurrency)
    ]

    async def worker(connection: _Connection, queue: Iterator[tuple[int, tuple[Any, bytes]]], timed: bool) -> None:
        for i, (_, body) in queue:
            t0 = time.perf_counter()
            status, content = await connection.post(target, body, "application/x-pki-message")
            if timed:
                latencies.append(time.perf_counter() - t0)
            replies[i] = content if status == 200 else status

    async def batch(items: list[tuple[int, tuple[Any, bytes]]], timed: bool) -> None:
        queue = iter(items)
        async with trio.open_nursery() as nursery:
            for connection in connections:
                nursery.start_soon(worker, connection, queue, timed)

    try:
        indexed = list(enumerate(messages))
        await batch(indexed[:warmup], False)
        with window():
            await batch(indexed[warmup:], True)
    finally:
        for connection in connections:
            await connection.aclose()
    return latencies, replies


class CpuMeter(Protocol):
    """CPU seconds per process group: read at a window's start and stop, the difference is the window's."""

    def snapshot(self) -> dict[str, float]: ...

    def delta(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]: ...


async def timed_post_all(
    url: str | Sequence[str], messages: Sequence[tuple[Any, bytes]], concurrency: int, warmup: int, meter: CpuMeter
) -> tuple[float, dict[str, float], list[float], list[bytes | int]]:
    """`post_all`, with `meter` read when the clock starts and stops: (seconds, CPU per group, latencies, replies)."""
    measured: dict[str, Any] = {}

    @contextmanager
    def window() -> Iterator[None]:
        before, start = meter.snapshot(), time.perf_counter()
        yield
        measured["elapsed"], measured["cpu"] = time.perf_counter() - start, meter.delta(before, meter.snapshot())

    latencies, replies = await post_all(url, messages, concurrency, warmup, window)
    return measured["elapsed"], measured["cpu"], latencies, replies


async def run(
    url: str,
    messages: Sequence[tuple[Any, bytes]],
    concurrency: int,
    warmup: int = 0,
    pid: int | None = None,
    token_cpu: list[float] | None = None,
) -> tuple[float, float, float | None, list[float], list[bytes | int]]:
    """`post_all`, measured: the elapsed wall time, this process's CPU time and the server's (with
    `pid`) over the timed window, each request's latency and each reply. With `pid`, the CPU time of
    the server's token worker processes in the window is appended to `token_cpu`.
    """
    measured: dict[str, float] = {}

    @contextmanager
    def window() -> Iterator[None]:
        server, token = cpu_split(pid) if pid else (0.0, 0.0)
        start, cpu = time.perf_counter(), time.process_time()
        yield
        measured["elapsed"], measured["cpu"] = time.perf_counter() - start, time.process_time() - cpu
        if pid:
            server_after, token_after = cpu_split(pid)
            measured["server"] = server_after - server
            if token_cpu is not None:
                token_cpu.append(token_after - token)

    latencies, replies = await post_all(url, messages, concurrency, warmup, window)
    return measured["elapsed"], measured["cpu"], measured.get("server"), latencies, replies


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def check(
    messages: Sequence[tuple[rsa.RSAPrivateKey, bytes]],
    replies: Sequence[bytes | int],
    ca_certs: list[x509.Certificate],
    serials: list[int] | None = None,
) -> tuple[int, dict[str, int]]:
    """Open every reply: (number of verified certificates, count of each other outcome). The serial
    of every verified certificate is appended to `serials`, for a caller that looks them up."""
    ok, failures = 0, dict[str, int]()
    for (key, _), reply in zip(messages, replies):
        if isinstance(reply, int):
            outcome = f"HTTP {reply}"
        else:
            try:
                rep = parse_cert_rep(reply, decrypt_key=key, trusted_signers=ca_certs)
                if rep.status is PkiStatus.SUCCESS and rep.certificates:
                    rep.certificates[0].verify_directly_issued_by(ca_certs[-1])
                    ok += 1
                    if serials is not None:
                        serials.append(rep.certificates[0].serial_number)
                    continue
                outcome = f"{rep.status.name} {rep.fail_info.name if rep.fail_info else ''}".strip()
            except Exception as e:  # noqa: BLE001 - a broken reply is counted, not fatal
                outcome = f"unreadable reply ({type(e).__name__})"
        failures[outcome] = failures.get(outcome, 0) + 1
    return ok, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--challenge", required=True)
    ap.add_argument("-n", type=int, default=400, help="timed enrollments (fresh RSA-2048 clients)")
    ap.add_argument("-c", type=int, default=8, help="concurrency")
    ap.add_argument("--warmup", type=int, default=0, help="untimed enrollments first (default 0)")
    ap.add_argument("--pid", type=int, help="server PID, to report its CPU time per enrollment")
    ap.add_argument("--keys", type=Path, help="cache of client keys, reused by later runs")
    ap.add_argument("--label", default="server")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    ca_certs, messages = prepare(args.url, args.challenge, args.warmup + args.n, args.keys)
    token_cpu: list[float] = []
    elapsed, client_cpu, server_cpu, latencies, replies = trio.run(
        run, args.url, messages, args.c, args.warmup, args.pid, token_cpu
    )
    # The warm-up's replies are checked too, but only the timed ones are counted.
    _, fail_warm = check(messages[: args.warmup], replies[: args.warmup], ca_certs)
    ok, failures = check(messages[args.warmup :], replies[args.warmup :], ca_certs)
    result = {
        "label": args.label,
        "n": args.n,
        "c": args.c,
        "warmup": args.warmup,
        "ok": ok,
        "failures": failures,
        "warmup_failures": fail_warm,
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p95_ms": pct(latencies, 95) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "client_cpu_ms": client_cpu / args.n * 1000,
        "client_cores": client_cpu / elapsed,
        "server_cpu_ms": server_cpu / args.n * 1000 if server_cpu is not None else None,
        "token_cpu_ms": token_cpu[0] / args.n * 1000 if token_cpu else None,
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        line = (
            f"{args.label}: n={args.n} c={args.c} ok={ok} {result['rate']:.1f} enrollments/s "
            f"p50={result['p50_ms']:.1f}ms p95={result['p95_ms']:.1f}ms p99={result['p99_ms']:.1f}ms "
            f"client_cpu={result['client_cpu_ms']:.2f}ms/enrollment"
        )
        if args.pid:
            line += f" server_cpu={result['server_cpu_ms']:.2f}ms/enrollment"
        if failures:
            line += " failures=" + ", ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        print(line, flush=True)
    return 0 if ok == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
