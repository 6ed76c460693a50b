"""The fake Intune's own CPU per enrollment: one validateRequest and one successNotification.

bench/intune_load.py runs the fake on the same 2 cores as the daemon, so every
millisecond the fake spends is taken from the daemon. This drives the fake alone,
as a daemon would during that benchmark: the fake in its own process (started
exactly as intune_load starts it), its 200 ms delay on both calls, devices with
their own minted challenge, CSR and transaction, `-c` keep-alive connections each
sending validate then success for one device after another. It prints the fake's
CPU (utime + stime from /proc) per pair over the timed window.

    python -m bench.fake_intune_cpu [-n 1024] [-c 64] [--rounds 3] [--delay 0.2] [--warmup 128]

Everything the load generator sends is built before the clock (challenges minted
through the admin API, CSRs signed, requests as bytes with their own
client-request-id, head and body written separately as httpx writes them); during
the window it only writes bytes and reads replies, so its own CPU, printed too,
stays small. Every reply is checked after the clock
(HTTP 200 and code Success), and so is the fake's record of the calls.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import trio

from bench import loadgen
from bench.intune_load import FakeProcess
from tests.support.fake_intune.helpers import make_csr

API_VERSION = "2018-02-20"  # what scepd sends to ScepActions (scepd/intune/contract.py)
CALLER = "scepd-bench"


Message = tuple[bytes, bytes]  # a request's head and body, sent in two writes as httpx (httpcore) sends them


def _request(host: str, path: str, token: str, body: Mapping[str, object]) -> Message:
    """One POST as httpx writes it for scepd's Intune client: the same headers, JSON body."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: gzip, deflate\r\n"
        "Connection: keep-alive\r\n"
        f"User-Agent: {CALLER}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"client-request-id: {uuid.uuid4()}\r\n"
        f"UserAgent: {CALLER}\r\n"
        f"api-version: {API_VERSION}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode(), data


def build_pairs(fake: FakeProcess, secret: str, n: int, keys: int) -> list[tuple[Message, Message]]:
    """(validateRequest, successNotification) request bytes for n devices, each with its own
    minted challenge, subject, CSR and transaction."""
    info = fake.http.get(fake.url + "/_fake/info").json()
    form = {
        "grant_type": "client_credentials",
        "client_id": info["clientId"],
        "client_secret": secret,
        "scope": "https://api.manage.microsoft.com//.default",
    }
    r = fake.http.post(info["tokenUrl"], data=form)
    r.raise_for_status()
    token = r.json()["access_token"]
    split = urlsplit(info["scepServiceUrl"])
    host = split.netloc
    client_keys = loadgen.client_keys(keys)
    pairs = []
    for i in range(n):
        cn = f"bench-fake-{i}-{secrets.token_hex(4)}"
        challenge = fake.admin("challenges", {"subject": f"CN={cn}", "ttl": 3600})["challenge"]
        csr = base64.b64encode(make_csr(f"CN={cn}", challenge, key=client_keys[i % keys])).decode()
        transaction = secrets.token_hex(16)
        validate = {"request": {"transactionId": transaction, "certificateRequest": csr, "callerInfo": CALLER}}
        success = {
            "notification": {
                "transactionId": transaction,
                "certificateRequest": csr,
                "certificateThumbprint": secrets.token_hex(20).upper(),
                "certificateSerialNumber": secrets.token_hex(16).upper(),
                "certificateExpirationDateUtc": "2027-12-03T12:00:00.000Z",
                "issuingCertificateAuthority": "CN=scepd bench CA",
                "callerInfo": CALLER,
                "caConfiguration": None,
                "certificateAuthority": None,
            }
        }
        pairs.append(
            (
                _request(host, split.path + "/ScepActions/validateRequest", token, validate),
                _request(host, split.path + "/ScepActions/successNotification", token, success),
            )
        )
    return pairs


async def _exchange(stream: trio.SocketStream, request: Message, buffer: bytearray) -> bytes:
    """Send one request, read one whole reply (head and a Content-Length body); leftover bytes stay in buffer."""
    await stream.send_all(request[0])
    await stream.send_all(request[1])
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            total = end + 4 + length
            if len(buffer) >= total:
                reply = bytes(buffer[:total])
                del buffer[:total]
                return reply
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("the fake closed the connection")
        buffer += data


async def drive(address: tuple[str, int], pairs: list[tuple[Message, Message]], concurrency: int) -> list[bytes]:
    """Every pair over `concurrency` keep-alive connections; the replies, in pair order (two per pair)."""
    replies: list[bytes] = [b""] * (2 * len(pairs))
    todo = iter(range(len(pairs)))

    async def client() -> None:
        stream = await trio.open_tcp_stream(*address)
        buffer = bytearray()
        async with stream:
            for i in todo:
                replies[2 * i] = await _exchange(stream, pairs[i][0], buffer)
                replies[2 * i + 1] = await _exchange(stream, pairs[i][1], buffer)

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(pairs))):
            nursery.start_soon(client)
    return replies


_CLK = os.sysconf("SC_CLK_TCK")


def process_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process: the fake is a single process, and the split
    shows how much is the kernel's loopback TCP work (charged to the sender) rather than Python."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK, int(fields[12]) / _CLK


def _ok(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"code": "Success", "errorDescription": ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1024, help="timed validate+success pairs per round")
    ap.add_argument("-c", type=int, default=64, help="concurrent keep-alive connections")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, one after the other on the same fake")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the fake waits before each answer")
    ap.add_argument("--warmup", type=int, default=128, help="untimed pairs before the first round")
    ap.add_argument("--keys", type=int, default=16, help="device keys, reused across CSRs")
    args = ap.parse_args()

    total = args.warmup + args.rounds * args.n
    rounds: list[tuple[float, float, float, float]] = []  # (user, system, own, elapsed) seconds
    with tempfile.TemporaryDirectory() as tmp, FakeProcess.running(Path(tmp)) as fake:
        for route in ("validate", "success"):
            fake.admin("faults", {"route": route, "times": 10**7, "delay": args.delay})
        built = time.perf_counter()
        pairs = build_pairs(fake, FakeProcess.SECRET, total, args.keys)
        built = time.perf_counter() - built
        split = urlsplit(fake.url)
        address = (split.hostname or "127.0.0.1", split.port or 80)
        replies = trio.run(drive, address, pairs[: args.warmup], args.c)
        for r in range(args.rounds):
            chunk = pairs[args.warmup + r * args.n : args.warmup + (r + 1) * args.n]
            (user0, sys0), own0, start = process_times(fake.proc.pid), time.process_time(), time.perf_counter()
            replies += trio.run(drive, address, chunk, args.c)
            elapsed = time.perf_counter() - start
            user1, sys1 = process_times(fake.proc.pid)
            rounds.append((user1 - user0, sys1 - sys0, time.process_time() - own0, elapsed))
        calls = fake.http.get(fake.url + "/_fake/calls").json()

    bad = sum(not _ok(r) for r in replies)
    recorded = {route: sum(c["route"] == route for c in calls) for route in ("validate", "success")}
    print(
        f"{args.rounds} rounds of {args.n} validate+success pairs (after {args.warmup} untimed), {args.c} "
        f"connections, fake delay {args.delay * 1000:.0f} ms per call; requests built in {built:.1f} s"
    )
    print(f"{'round':>5} {'pairs/s':>8} {'fake ms/pair':>13} {'user':>6} {'system':>7} {'loadgen ms/pair':>16}")
    per_pair = []
    for i, (user, system, own, elapsed) in enumerate(rounds, 1):
        ms = (user + system) * 1000 / args.n
        per_pair.append(ms)
        print(
            f"{i:>5} {args.n / elapsed:>8.0f} {ms:>13.3f} {user * 1000 / args.n:>6.3f} "
            f"{system * 1000 / args.n:>7.3f} {own * 1000 / args.n:>16.3f}"
        )
    print(f"fake CPU per pair: median {statistics.median(per_pair):.3f} ms")
    print(f"replies not 200 Success: {bad} of {2 * total}; calls recorded: {recorded} (expected {total} each)")
    return 1 if bad or recorded != {"validate": total, "success": total} else 0


if __name__ == "__main__":
    sys.exit(main())
