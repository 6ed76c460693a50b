"""The fake's own HTTP/1.1 reader and writer: sans-IO cases, then a few over a real socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.fake_intune import FakeIntune, running_fake_intune
from tests.support.fake_intune.http11 import MAX_HEAD, BadRequest, CannotSend, RequestReader, encode_response

POST = (
    b"POST /a/b?x=1&y= HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    b'X-Twice: 1\r\nx-twice: 2\r\nContent-Length: 7\r\n\r\n{"a":1}'
)


def read_all(data: bytes, *, max_body: int = 1024, step: int | None = None) -> list[tuple[object, ...]]:
    """Every request in data (fed whole, or `step` bytes at a time), as comparable tuples."""
    reader = RequestReader(max_body)
    out: list[tuple[object, ...]] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        reader.feed(piece)
        while (request := reader.next_request()) is not None:
            out.append((request.method, request.path, request.headers, request.body, reader.keep_alive))
    return out


def test_a_request_whole_and_byte_by_byte() -> None:
    expected = [
        (
            "POST",
            "/a/b",
            (("host", "h"), ("content-type", "application/json"), ("x-twice", "1"), ("x-twice", "2"),
             ("content-length", "7")),
            b'{"a":1}',
            True,
        )
    ]  # fmt: skip
    assert read_all(POST) == expected
    assert read_all(POST, step=1) == expected
    reader = RequestReader(1024)
    reader.feed(POST)
    request = reader.next_request()
    assert request is not None and request.target == "/a/b?x=1&y=" and request.query == {"x": ["1"], "y": [""]}
    assert request.header("X-TWICE") == "1"


def test_pipelined_requests() -> None:
    get = b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    got = read_all(POST + get + POST, step=5)
    assert [(m, p, b) for m, p, _, b, _ in got] == [
        ("POST", "/a/b", b'{"a":1}'),
        ("GET", "/c", b""),
        ("POST", "/a/b", b'{"a":1}'),
    ]


def test_bare_line_feeds_are_line_ends() -> None:
    got = read_all(b"POST /x HTTP/1.1\nHost: h\nContent-Length: 2\n\nok")
    assert got == [("POST", "/x", (("host", "h"), ("content-length", "2")), b"ok", True)]


def test_chunked_body_with_extension_and_trailer() -> None:
    data = (
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    for step in (None, 1, 7):
        got = read_all(data, step=step)
        assert [(p, b) for _, p, _, b, _ in got] == [("/x", b"abc0123456789abcdef"), ("/next", b"")]


def test_as_h11_reads_them_folded_lines_and_transfer_encoding_over_content_length() -> None:
    got = read_all(b"GET /x HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\tc\r\nY: d\r\n\r\n")
    assert got[0][2] == (("host", "h"), ("x", "a b c"), ("y", "d"))
    got = read_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 2\r\n\r\nok")
    assert got[0][2:4] == ((("host", "h"), ("content-length", "2")), b"ok")
    data = (
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert [b for _, _, _, b, _ in read_all(data)] == [b"abc"]


def test_connection_persistence() -> None:
    assert read_all(b"GET / HTTP/1.0\r\n\r\n")[0][4] is False
    assert read_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0][4] is False  # as h11: 1.0 closes
    assert read_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, Close\r\n\r\n")[0][4] is False
    assert read_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")[0][4] is True


def test_head_requests_are_marked() -> None:
    reader = RequestReader(1024)
    reader.feed(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.next_request() is not None and reader.head_only
    reader.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.next_request() is not None and not reader.head_only


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x HTTP/1.1\r\n\r\n",  # no Host
        b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"G(T /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
        b"GET /x HTTP/1.1\r\n folded: h\r\nHost: h\r\n\r\n",  # a continuation line with nothing to continue
        b"\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n",  # as h11: nothing before the request line
        b"GET /x HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",  # a lone CR
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: \xb2\r\n\r\nab",  # "²" is a digit to str.isdigit, not to HTTP
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
        b"GET /" + b"x" * MAX_HEAD + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /" + b"x" * MAX_HEAD,  # no end of head in sight
    ],
)
def test_malformed_requests_are_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_all(data)
    assert caught.value.status == 400


def test_bodies_over_the_limit_are_413() -> None:
    with pytest.raises(BadRequest) as caught:
        read_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", max_body=10)
    assert caught.value.status == 413  # refused from the head, before the body comes
    with pytest.raises(BadRequest) as caught:
        read_all(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n", max_body=10)
    assert caught.value.status == 413
    assert read_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", max_body=10)


def test_end_of_input() -> None:
    reader = RequestReader(1024)
    reader.feed(POST)
    reader.feed(b"")
    assert reader.at_eof and reader.next_request() is not None and reader.next_request() is None
    for cut in (20, len(POST) - 1):  # in the head, in the body
        reader = RequestReader(1024)
        reader.feed(POST[:cut])
        assert reader.next_request() is None and not reader.at_eof
        reader.feed(b"")
        with pytest.raises(BadRequest):  # as h11: the client gets a 400 if it still listens
            reader.next_request()


def test_encode_response() -> None:
    headers = [("content-type", "application/json"), ("content-length", "2"), ("x-empty", "")]
    assert encode_response(200, headers, b"{}", keep_alive=True) == (
        b"HTTP/1.1 200 \r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-empty: \r\n\r\n{}"
    )
    assert encode_response(400, [("content-length", "2")], b"{}", keep_alive=False, head_only=True) == (
        b"HTTP/1.1 400 \r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    )
    for bad in [("x", "a\r\nb"), ("x y", "a"), ("x", " padded"), ("x", "\u20ac")]:
        with pytest.raises(CannotSend):
            encode_response(200, [bad], b"", keep_alive=True)
    with pytest.raises(CannotSend):
        encode_response(1000, [], b"", keep_alive=True)


# -- over a socket ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[FakeIntune]:
    with running_fake_intune() as fake:
        yield fake


def exchange(fake: FakeIntune, data: bytes, *, half_close: bool = False) -> bytes:
    """Send data (then shut our sending side down), and read until the fake closes the connection (or 2 s pass)."""
    assert fake.base_url is not None
    host, port = fake.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_pipelined_admin_requests_then_close(served: FakeIntune) -> None:
    get = b"GET /_fake/faults HTTP/1.1\r\nHost: h\r\n\r\n"
    chunked = (
        b"POST /_fake/clock HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b'5\r\n{"adv\r\nb\r\nance": 0.0}\r\n0\r\n\r\n'
    )
    answer = exchange(served, get + chunked)
    assert answer.count(b"HTTP/1.1 200 \r\n") == 2, answer
    assert b'{"now":' in answer and answer.endswith(b"}") and b"connection: close" in answer


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /_fake/info HTTP/1.1\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n", b"413"),
    ],
)
def test_bad_requests_get_an_error_and_a_closed_connection(served: FakeIntune, data: bytes, status: bytes) -> None:
    answer = exchange(served, data + b"GET /_fake/info HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status + b" ") and answer.count(b"HTTP/1.1") == 1, answer
    assert b"Bad HTTP request" in answer and b"connection: close" in answer


def test_a_request_cut_short_gets_a_400(served: FakeIntune) -> None:
    answer = exchange(served, b"POST /_fake/clock HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n{}", half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"middle of a request" in answer, answer


def test_a_fault_header_that_cannot_be_sent_drops_the_connection(served: FakeIntune) -> None:
    served.reset()
    served.fail("token", 503, headers=[("x-bad", "a\nb")])
    assert served.base_url is not None
    path = f"/{served.tenant}/oauth2/v2.0/token".encode()
    assert exchange(served, b"POST " + path + b" HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n") == b""
    assert [c.outcome for c in served.calls("token")] == ["fault"]
