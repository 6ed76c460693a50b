"""Every log record is one line, whatever a client put in it (issue 13 point 4).
The end-to-end check over HTTP is tests/e2e/test_exposures.py."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re

import pytest

from scepd.logs import OneLineFormatter, audit, escape_controls, event, event_text, fields, setup


def test_control_characters_become_visible_escapes() -> None:
    assert escape_controls("a\r\nb\tc\x00d\x1b[2Je\x7ff\x85g\u2028h\u2029i") == (
        "a\\r\\nb\\tc\\x00d\\x1b[2Je\\x7ff\\x85g\\u2028h\\u2029i"
    )
    assert escape_controls("CN=Müller, O=ü€") == "CN=Müller, O=ü€"  # printable non-ASCII stays


def test_fields_quote_and_escape() -> None:
    assert fields(tid="a b", cn="x\ny", n=3, empty="", none=None) == 'tid="a b" cn="x\\ny" n=3 empty=""'
    assert fields(s='say "hi"\\') == 's="say \\"hi\\"\\\\"'


def test_a_record_with_arguments_and_a_traceback_is_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("level=%(levelname)s %(message)s"))
    log = logging.getLogger("scepd.test_logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("bad\nlevel=ERROR event=forged")
        except ValueError:
            log.exception("event=x transaction_id=%s", "t\r\nlevel=ERROR event=forged")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.startswith("level=ERROR event=x transaction_id=t\\r\\nlevel=ERROR event=forged")
    assert "Traceback" in text and "ValueError: bad\\nlevel=ERROR" in text


# A strict logfmt reader: key=value pairs separated by single spaces; a value is bare (no space,
# quote, equals sign or backslash) or double-quoted with \" and \\ escapes.
_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)(?: |$)')


def logfmt(line: str) -> dict[str, str]:
    """The pairs of one logfmt line; fails on anything that is not logfmt."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m is not None, f"not logfmt at {pos}: {line[pos:]!r}"
        key, value = m.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
        pos = m.end()
    return out


def test_event_lines_are_logfmt_with_an_rfc3339_timestamp() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    log = logging.getLogger("scepd.test_logs.logfmt")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        event(log, logging.WARNING, "crl_store_failed", error='disk "full" now', path="/a b", n=3, gone=None)
        event(log, logging.DEBUG, "not_shown")
    finally:
        log.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    pairs = logfmt(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pairs["ts"]), pairs["ts"]
    when = dt.datetime.fromisoformat(pairs["ts"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60
    assert pairs == {
        "ts": pairs["ts"],
        "level": "WARNING",
        "logger": "scepd.test_logs.logfmt",
        "event": "crl_store_failed",
        "error": 'disk "full" now',
        "path": "/a b",
        "n": "3",
    }


def test_event_text_and_audit_quote_like_fields() -> None:
    assert event_text("x") == "event=x"
    assert logfmt(event_text("ca_key_opens_envelopes", key="pkcs11:token=a b", remedy="scepd ca ra-init")) == {
        "event": "ca_key_opens_envelopes",
        "key": "pkcs11:token=a b",
        "remedy": "scepd ca ra-init",
    }


def test_setup_writes_logfmt_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup("INFO")
        event(logging.getLogger("scepd.test"), logging.INFO, "hello", who="the world")
        audit("issued", serial="1f", subject="CN=a b")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert [logfmt(x)["event"] for x in lines if "event=" in x] == ["hello"]
    assert logfmt(lines[-1])["audit"] == "issued" and logfmt(lines[-1])["subject"] == "CN=a b"
