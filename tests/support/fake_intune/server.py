"""HTTP/1.1 on trio + h11, written out so a fault can stall an answer or drop the
connection mid-request, which no framework lets a handler do.

`serve_fake_intune` runs in the caller's trio nursery; `running_fake_intune`
runs it in a thread with its own trio loop, for sync tests, for async tests
whose client must not share a loop with the fake, and for the command line.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from tests.support.fake_intune import app
from tests.support.fake_intune.errors import intune_error
from tests.support.fake_intune.model import DropHow, Reply, Request
from tests.support.fake_intune.state import FakeIntune

MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 60.0  # a kept-alive connection with nothing to say is closed after this
STOP_TIMEOUT = 10.0


class _TooLarge(Exception):
    pass


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    """The next whole request, or None when the client closed or went idle."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            with trio.move_on_after(IDLE_TIMEOUT):
                conn.receive_data(await stream.receive_some(65536))
                continue
            return None
        if isinstance(event, h11.Request):
            head = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and int(length) > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = head.target.decode("latin-1")
            return Request(
                method=head.method.decode("ascii"),
                target=target,
                path=urlsplit(target).path,
                headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
                body=bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once a second: the fake shares the CPU with what it serves."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


async def _send(conn: h11.Connection, stream: trio.abc.Stream, reply: Reply) -> None:
    body = reply.encode()
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(body))),
        ("date", _http_date()),
        ("server", "fake-intune"),
        *reply.headers,
    ]
    # One write for head, body and end: one system call and one wake-up of the client, not three.
    head = conn.send(h11.Response(status_code=reply.status, headers=headers))
    data = conn.send(h11.Data(data=body))
    end = conn.send(h11.EndOfMessage())
    assert head is not None and data is not None and end is not None
    await stream.send_all(head + data + end)


async def _drop(stream: trio.abc.Stream, how: DropHow) -> None:
    if how == "reset" and isinstance(stream, trio.SocketStream):  # linger 0: RST, "connection reset"
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _connection(fake: FakeIntune, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                request = await _read_request(conn, stream)
            except (h11.RemoteProtocolError, _TooLarge, ValueError) as e:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = 413 if isinstance(e, _TooLarge) else 400
                    await _send(conn, stream, intune_error(status, f"Bad HTTP request: {type(e).__name__}"))
                return
            if request is None:
                return
            reply = app.handle(fake, request)
            if reply.delay:
                await trio.sleep(reply.delay)
            if reply.drop:
                await _drop(stream, reply.drop)
                return
            await _send(conn, stream, reply)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()


async def serve_fake_intune(
    fake: FakeIntune,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `fake` until cancelled; `nursery.start(...)` returns its base URL.

    With `ssl_context` it speaks HTTPS (every URL it hands out then starts with https://),
    as Microsoft's endpoints or a TLS-inspecting proxy in front of them do."""
    tcp = await trio.open_tcp_listeners(port, host=host)
    bound_port = tcp[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[Any]] = list(tcp)
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in tcp]
    fake.base_url = f"{'https' if ssl_context else 'http'}://{host}:{bound_port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(trio.serve_listeners, partial(_connection, fake), listeners, handler_nursery=nursery)
        )
        task_status.started(fake.base_url)


@contextmanager
def running_fake_intune(
    fake: FakeIntune | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    **settings: Any,
) -> Iterator[FakeIntune]:
    """Serve a fake (made from `settings`, e.g. tenant=, client_id=, client_secret=,
    client_certificates=, unless one is given) in a background thread; stops on exit,
    within a bounded time, cancelling any answer still being delayed."""
    fake = fake if fake is not None else FakeIntune(**settings)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["token"] = trio.lowlevel.current_trio_token()
            box["scope"] = nursery.cancel_scope
            await nursery.start(partial(serve_fake_intune, fake, host, port, ssl_context=ssl_context))
            ready.set()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread below
            box["error"] = e
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fake-intune", daemon=True)
    thread.start()
    if not ready.wait(STOP_TIMEOUT) or "error" in box:
        raise RuntimeError("the fake Intune server did not start") from box.get("error")
    try:
        yield fake
    finally:
        box["token"].run_sync_soon(box["scope"].cancel)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the fake Intune server did not stop")
