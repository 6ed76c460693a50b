"""Every log record is one line, whatever a client put in it (issue 13 point 4).
The end-to-end check over HTTP is tests/e2e/test_exposures.py."""

from __future__ import annotations

import io
import logging

from scepd.logs import OneLineFormatter, escape_controls, fields


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
