"""The server side of HTTP/1.1 as the fake needs it, sans-IO: bytes in, `Request`s out,
and a reply's bytes back.

The fake used h11 for this. h11 is thorough, but its work per request (an event
object per step, each header checked by regular expressions on the way in and
again on the way out, a state machine for each side) cost about as much CPU as the
Intune routes themselves, and benchmarks run the fake on the same cores as the
daemon (bench/intune_load.py), so that time came out of the daemon's; the figures
are in docs/benchmarks.md (bench/fake_intune_cpu.py). What the fake's clients send
is plain: a head, then a Content-Length or chunked body, kept alive or not. This
reads exactly that, strictly (RFC 9112), and raises `BadRequest` for anything else,
which the server answers with a 400 (413 for a body over the limit) and a closed
connection, as it did with h11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.fake_intune.model import Request

MAX_HEAD = 16 * 1024  # h11's default limit on a request head
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])")
CONTROLS = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])  # all but HTAB and LF
HEAD_END = re.compile(rb"\n\r?\n")  # the blank line; a CR before its first LF belongs to the last line
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
SENDABLE_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")  # any character but controls other than HTAB


class BadRequest(Exception):
    """The client sent something that is not an HTTP/1.1 request the fake can read."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CannotSend(ValueError):
    """A header the fake was told to send (by a fault) is not a valid HTTP header."""


@dataclass(frozen=True)
class _Head:
    """A request's head, read; kept while its body is still arriving."""

    method: str
    target: str
    path: str
    headers: tuple[tuple[str, str], ...]
    size: int  # bytes, the blank line included: where the body starts
    length: int  # Content-Length (0 when chunked)
    chunked: bool
    keep_alive: bool


class RequestReader:
    """Feed it what the connection receives; `next_request` hands out each whole request."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._head: _Head | None = None
        self.at_eof = False  # the client closed its side
        self.keep_alive = True  # of the request handed out last: may another follow on this connection?
        self.head_only = False  # the request handed out last was a HEAD: answer without a body

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes from the connection; b"" when the client closed it."""
        if data:
            self._buffer += data
        else:
            self.at_eof = True

    def next_request(self) -> Request | None:
        """The next whole request, or None until more bytes come (or, at the end of input, when
        none is left). Raises BadRequest, also for a request the client stopped sending halfway."""
        request = self._next()
        if request is None and self.at_eof and self._buffer:
            raise BadRequest("the connection was closed in the middle of a request")
        return request

    def _next(self) -> Request | None:
        if self._head is None:
            self._head = self._read_head()
            if self._head is None:
                return None
        head = self._head
        buffer = self._buffer
        if head.chunked:
            found = self._chunked(head.size)
            if found is None:
                return None
            body, consumed = found
        else:
            if len(buffer) < head.size + head.length:
                return None
            consumed = head.size + head.length
            body = bytes(buffer[head.size : consumed])
        del buffer[:consumed]
        self._head = None
        self.keep_alive, self.head_only = head.keep_alive, head.method == "HEAD"
        return Request(method=head.method, target=head.target, path=head.path, headers=head.headers, body=body)

    def _read_head(self) -> _Head | None:
        buffer = self._buffer
        end = HEAD_END.search(buffer)
        if end is None:
            if len(buffer) > MAX_HEAD:
                raise BadRequest("the request head is too long")
            return None
        if end.start() > MAX_HEAD:
            raise BadRequest("the request head is too long")
        # Lines end in CRLF, or a bare LF (RFC 9112 §2.2 lets a server take either); after that,
        # any control character but HTAB, a lone CR included, is an error wherever it is.
        raw = bytes(buffer[: end.start()]).replace(b"\r\n", b"\n")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw.translate(None, CONTROLS)) != len(raw):
            raise BadRequest("a control character in the request head")
        lines = raw.decode("latin-1").split("\n")
        match = REQUEST_LINE.fullmatch(lines[0])
        if match is None:
            raise BadRequest("malformed request line")
        method, target, minor = match.groups()
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # obs-fold: the previous value goes on (as h11 reads it)
                name, value = headers.pop()
                value = (value + " " + line.strip(" \t")).strip(" ")
            else:
                name, colon, value = line.partition(":")
                if not colon or not TOKEN.fullmatch(name):
                    raise BadRequest("malformed header line")
                name, value = name.lower(), value.strip(" \t")
            headers.append((name, value))
        lengths: list[str] = []
        chunked = False
        connection = ""
        has_host = False
        for name, value in headers:
            if name == "content-length":
                lengths += [v.strip(" \t") for v in value.split(",")]
            elif name == "transfer-encoding":
                if value.lower() != "chunked" or chunked:  # gzip, identity, ... or twice
                    raise BadRequest("only Transfer-Encoding: chunked is supported")
                chunked = True
            elif name == "connection":
                connection += "," + value.lower()
            elif name == "host":
                has_host = True
        if minor == "1" and not has_host:
            raise BadRequest("missing Host header")
        length = 0
        if lengths and not chunked:  # with both, Transfer-Encoding wins (RFC 9112 §6.3), as in h11
            if not all(v.isascii() and v.isdigit() for v in lengths) or len(set(lengths)) != 1:
                raise BadRequest("bad Content-Length")
            length = int(lengths[0])
        if length > self.max_body:
            raise BadRequest("the body is too large", 413)
        keep_alive = minor == "1" and "close" not in {t.strip() for t in connection.split(",")}
        return _Head(method, target, urlsplit(target).path, tuple(headers), end.end(), length, chunked, keep_alive)

    def _chunked(self, pos: int) -> tuple[bytes, int] | None:
        """A chunked body starting at pos: (body, where the request ends), or None until it is all here."""
        buffer = self._buffer
        body = bytearray()
        while True:
            eol = buffer.find(b"\n", pos)
            if eol < 0:
                return None
            match = CHUNK_SIZE.fullmatch(buffer, pos, eol - 1 if buffer[eol - 1 : eol] == b"\r" else eol)
            if match is None:
                raise BadRequest("malformed chunk size")
            size = int(match.group(1), 16)
            pos = eol + 1
            if size == 0:
                break
            if len(body) + size > self.max_body:
                raise BadRequest("the body is too large", 413)
            if len(buffer) < pos + size + 2:
                return None
            body += buffer[pos : pos + size]
            pos += size
            if buffer[pos : pos + 2] == b"\r\n":
                pos += 2
            elif buffer[pos : pos + 1] == b"\n":
                pos += 1
            else:
                raise BadRequest("a chunk does not end where its size says")
        trailer = pos
        while True:  # trailer fields, ignored, up to the blank line
            eol = buffer.find(b"\n", pos)
            if eol < 0:
                if len(buffer) - trailer > MAX_HEAD:
                    raise BadRequest("the chunked trailer is too long")
                return None
            line = buffer[pos:eol].rstrip(b"\r")
            pos = eol + 1
            if not line:
                return bytes(body), pos


def encode_response(
    status: int, headers: list[tuple[str, str]], body: bytes, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    """A whole response, written as h11 wrote the fake's (no reason phrase, names as given).
    Raises CannotSend for a status or header a fault asked for that cannot be sent (the server
    then drops the connection, as it did when h11 refused one)."""
    if not 100 <= status <= 999:
        raise CannotSend(f"cannot send status {status}")
    lines = [f"HTTP/1.1 {status} "]
    for name, value in headers:
        if not TOKEN.fullmatch(name) or not SENDABLE_VALUE.fullmatch(value) or value != value.strip(" \t"):
            raise CannotSend(f"cannot send header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    if not keep_alive:
        lines.append("connection: close")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as e:
        raise CannotSend(f"a header is not Latin-1: {e}") from e
    return head if head_only else head + body
