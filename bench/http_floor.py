"""The HTTP stack's own CPU per request: the floor under any SCEP handler.

Serves, in a child process, the same stack scepd serves with (hypercorn's
Trio worker, with and without quart-trio on top) and an app that does no
work: it reads a request body the size of a PKCSReq and answers with a body
the size of a CertRep. bench/loadgen.py's client pattern (httpx, keep-alive,
C concurrent tasks, POST with an ``operation`` query) drives it, and the
server's CPU is read from /proc as loadgen does, so the figure compares
directly with loadgen's ``server_cpu`` for scepd.

    python -m bench.http_floor [-n 3000] [-c 4] [--stack asgi,quart] [--json]

What it says: scepd's CPU per enrollment is at least this plus what the token
spends (bench/token_signs.py), whatever the enrollment code does. Only
loopback is used; the child is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import trio

from bench.loadgen import run

REQUEST_BYTES = 3500  # a PKCSReq for an RSA-2048 client, as loadgen sends
REPLY_BYTES = 2600  # a CertRep with one RSA-2048 certificate


def serve(stack: str, fd: int) -> None:
    """The child: hypercorn on an inherited listening socket, with a do-nothing app."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    reply = os.urandom(REPLY_BYTES)
    if stack == "asgi":

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/x-pki-message"),
                        (b"content-length", str(len(reply)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": reply})

        asgi = app
    else:
        from quart import Response, request
        from quart_trio import QuartTrio

        quart = QuartTrio(__name__)

        @quart.route("/scep", methods=["GET", "POST"])
        async def scep() -> Response:
            await request.get_data()
            return Response(reply, content_type="application/x-pki-message")

        asgi = quart  # type: ignore[assignment]

    config = Config()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    trio.run(hypercorn_serve, asgi, config)


async def drive(url: str, n: int, concurrency: int, pid: int) -> tuple[float, float, float]:
    """(wall seconds, client CPU seconds, server CPU seconds) for n requests, through loadgen's own loop."""
    body = os.urandom(REQUEST_BYTES)
    warmup = max(50, n // 10)  # imports, connections
    wall, client_cpu, server_cpu, _, replies = await run(
        url, [(None, body)] * (warmup + n), concurrency, warmup=warmup, pid=pid
    )
    bad = [r if isinstance(r, int) else len(r) for r in replies if isinstance(r, int) or len(r) != REPLY_BYTES]
    if bad:
        raise RuntimeError(f"{len(bad)} unexpected replies (HTTP status or body length), first: {bad[0]}")
    assert server_cpu is not None
    return wall, client_cpu, server_cpu


def measure(stack: str, n: int, concurrency: int) -> dict[str, object]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.http_floor", "--child", stack, str(listener.fileno())],
        pass_fds=[listener.fileno()],
        stdin=subprocess.DEVNULL,
    )
    listener.close()
    try:
        url = f"http://127.0.0.1:{port}/scep"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b"x", timeout=5)
                break
            except httpx.TransportError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {stack} server did not start") from None
                time.sleep(0.1)
        wall, client_cpu, server_cpu = trio.run(drive, url, n, concurrency, child.pid)
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return {
        "stack": stack,
        "n": n,
        "concurrency": concurrency,
        "per_second": n / wall,
        "server_cpu_ms": server_cpu / n * 1000,
        "client_cpu_ms": client_cpu / n * 1000,
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        serve(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3000, help="timed requests per stack")
    ap.add_argument("-c", type=int, default=4, help="concurrent client tasks (keep-alive connections)")
    ap.add_argument(
        "--stack",
        default="asgi,quart",
        help="comma-separated: asgi (bare hypercorn) and/or quart (hypercorn + quart-trio)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for stack in args.stack.split(","):
        if stack not in ("asgi", "quart"):
            ap.error(f"unknown stack {stack!r}")
        result = measure(stack, args.n, args.c)
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{stack:6s} n={args.n} c={args.c}  {result['per_second']:8.1f} requests/s  "
                f"server CPU {result['server_cpu_ms']:.3f} ms/request  "
                f"client CPU {result['client_cpu_ms']:.3f} ms/request"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
