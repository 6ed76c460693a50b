"""Reading strict DER by offsets: the fast path for what scepd parses on every request.

asn1crypto parses a structure into Python objects field by field, which is
general (BER, every CMS choice) but was the largest piece of scepd's own
CPU per enrollment (docs/benchmarks.md). A request from a real client is nearly always strict DER in
one expected shape, so the request path first walks it here: tags and
lengths only, by offset into the original bytes, nothing copied until a
field is taken. Anything that is not exactly that (BER indefinite lengths,
constructed strings, high tag numbers, a length that overruns, a choice we
do not expect) raises `NotStrictDer`, and the caller parses the message the
general way instead, with its precise errors. So this reader never decides
what a client is told; it only decides which parser runs.
"""

from __future__ import annotations

from scepd.der import BIT_STRING, CONTEXT_0, INTEGER, SEQUENCE


class NotStrictDer(ValueError):
    """Not the strict DER shape the fast path reads: parse it the general way."""


def header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the value at `pos`, which must end by `end`.

    Definite, minimal lengths only, and low tag numbers: DER (X.690 10.1)
    as far as the framing goes.
    """
    if pos + 2 > end:
        raise NotStrictDer("truncated header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise NotStrictDer("high tag number")
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0:
            raise NotStrictDer("indefinite length")
        if k > 4 or pos + k > end:
            raise NotStrictDer("length out of range")
        n = int.from_bytes(data[pos : pos + k], "big")
        if n < 0x80 or data[pos] == 0:
            raise NotStrictDer("length not minimally encoded")
        pos += k
    if pos + n > end:
        raise NotStrictDer("value overruns its container")
    return tag, pos, pos + n


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """Content (start, end) of the value at `pos`, which must carry `tag`."""
    got, start, stop = header(data, pos, end)
    if got != tag:
        raise NotStrictDer(f"expected tag {tag:#04x}, found {got:#04x}")
    return start, stop


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, value start, content start, content end) of each value in data[start:end]."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = header(data, pos, end)
        out.append((tag, pos, cs, ce))
        pos = ce
    return out


def whole(data: bytes, tag: int) -> tuple[int, int]:
    """Content of `data`, which must be exactly one value with `tag` and nothing after it."""
    start, stop = expect(data, 0, len(data), tag)
    if stop != len(data):
        raise NotStrictDer("trailing bytes")
    return start, stop


def integer(data: bytes, start: int, end: int) -> int:
    """A DER INTEGER's value from its content bytes (two's complement, minimal)."""
    if start == end:
        raise NotStrictDer("empty INTEGER")
    if end - start > 1 and (
        (data[start] == 0 and data[start + 1] < 0x80) or (data[start] == 0xFF and data[start + 1] >= 0x80)
    ):
        raise NotStrictDer("INTEGER not minimally encoded")
    return int.from_bytes(data[start:end], "big", signed=True)


def oid_text(content: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's content bytes."""
    if not content or content[-1] & 0x80:
        raise NotStrictDer("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise NotStrictDer("OBJECT IDENTIFIER arc not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(map(str, head + arcs[1:]))


def issuer_and_serial(certificate: bytes) -> tuple[bytes, bytes]:
    """(issuer Name, serialNumber INTEGER) of a DER certificate, each exactly as it is encoded."""
    start, end = whole(certificate, SEQUENCE)
    top = children(certificate, start, end)
    if [t for t, *_ in top] != [SEQUENCE, SEQUENCE, BIT_STRING]:
        raise NotStrictDer("not a Certificate")
    tbs = children(certificate, top[0][2], top[0][3])
    if tbs and tbs[0][0] == CONTEXT_0:  # [0] EXPLICIT version
        tbs = tbs[1:]
    if len(tbs) < 3 or tbs[0][0] != INTEGER or tbs[2][0] != SEQUENCE:
        raise NotStrictDer("not a TBSCertificate")
    serial, issuer = tbs[0], tbs[2]
    return certificate[issuer[1] : issuer[3]], certificate[serial[1] : serial[3]]
