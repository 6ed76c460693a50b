"""Bad input gets a clear answer (HTTP 4xx or a signed FAILURE) and the daemon stays up."""

from __future__ import annotations

import base64
import os

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import CHALLENGE
from tests.support.daemon import Daemon
from tests.support.scep_client import Client, make_csr, rsa_key


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x82\xff\xff", b"\x30\x03\x02\x01\x01", os.urandom(3000)],
    ids=["empty", "text", "truncated-length", "wrong-asn1", "random"],
)
async def test_garbage_post_is_400(client: Client, body: bytes) -> None:
    r = await client.post(body)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.text.strip()


async def test_truncated_real_message_is_400(client: Client) -> None:
    key = rsa_key()
    body = client.message(make_csr(key, "cut", CHALLENGE), key)
    r = await client.post(body[: len(body) // 2])
    assert r.status_code == 400


async def test_oversized_post_is_413(client: Client) -> None:
    r = await client.post(b"\x30" * (2 * 1024 * 1024))
    assert r.status_code == 413


async def _raw_get(base_url: str, target: str) -> int:
    """Status of a GET sent over a plain socket: httpx refuses URLs this long client-side.

    The server may answer and close before the request is fully sent, so sending
    runs beside reading and a broken pipe on the sending side is expected.
    """
    host, port = base_url.removeprefix("http://").split(":")
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    stream = await trio.open_tcp_stream(host, int(port))
    head = b""

    async def send() -> None:
        try:
            await stream.send_all(request)
        except trio.BrokenResourceError:
            pass

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with trio.fail_after(30):
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        nursery.cancel_scope.cancel()
    assert head.startswith(b"HTTP/1.1 "), head[:80]
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("size", [400_000, 2_000_000], ids=["over-app-limit", "over-http-limit"])
async def test_oversized_get_is_refused(daemon: Daemon, size: int) -> None:
    status = await _raw_get(daemon.base_url, f"{daemon.path}?operation=PKIOperation&message={'A' * size}")
    assert status in (413, 414, 431), status
    assert daemon.alive()


@pytest.mark.parametrize(
    "params",
    [
        {"operation": "PKIOperation"},
        {"operation": "PKIOperation", "message": "%%%not-base64"},
        {"operation": "Nonsense"},
        {},
    ],
    ids=["no-message", "bad-base64", "unknown-op", "no-op"],
)
async def test_bad_queries_are_400(client: Client, params: dict[str, str]) -> None:
    r = await client.http.get(client.url, params=params)
    assert r.status_code == 400, (r.status_code, r.text)


async def test_bit_flipped_message_never_500(daemon: Daemon, client: Client) -> None:
    key = rsa_key()
    body = bytearray(client.message(make_csr(key, "flip", CHALLENGE), key))
    statuses = set()
    for i in range(0, len(body), max(1, len(body) // 60)):
        mutated = bytearray(body)
        mutated[i] ^= 0x41
        r = await client.post(bytes(mutated))
        statuses.add(r.status_code)
        assert r.status_code in (200, 400), (i, r.status_code, r.text)
    assert daemon.alive()
    assert 400 in statuses  # the flips did reach the parser's error paths


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=2048))
def test_random_get_messages_never_500(daemon: Daemon, data: bytes) -> None:
    r = httpx.get(
        daemon.url, params={"operation": "PKIOperation", "message": base64.b64encode(data).decode()}, timeout=10
    )
    assert r.status_code in (200, 400, 413), r.status_code


async def test_daemon_still_serves_after_abuse(daemon: Daemon, client: Client) -> None:
    assert daemon.alive()
    rep, _ = await client.enroll("after-abuse", CHALLENGE)
    assert rep.certificates
