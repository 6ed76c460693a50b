"""Structured logging: one event per line in logfmt, to stderr for journald.

Every line is `ts=<RFC 3339> level=... logger=... event=NAME key=value ...`;
`event` (and `audit`, for the trail an operator greps for one transaction or
serial) is the one way to write such a line, so every value is quoted and
escaped the same way and a log shipper can split any line on unquoted
spaces. Callers pass fields, never preformatted secrets: no PIN, challenge or
key material is ever a field.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import Any

_audit = logging.getLogger("scepd.audit")


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a
# terminal, journald or a log shipper could take as the end of a line or a cursor move.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """The text on one line: control characters become visible escapes (\\n, \\x1b, \\u2028)."""

    def one(m: re.Match[str]) -> str:
        c = m.group()
        return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")

    return _CONTROL.sub(one, text)


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\') or _CONTROL.search(text):
        text = '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


def fields(**values: Any) -> str:
    """`key=value ...` in logfmt: a value with a space, quote, backslash or control is quoted and escaped;
    None leaves the key out."""
    return " ".join(f"{k}={_quote(v)}" for k, v in values.items() if v is not None)


def event_text(name: str, **values: Any) -> str:
    """One event as text (`event=NAME key=value ...`), for a line that is printed or returned, not logged."""
    rest = fields(**values)
    return f"event={_quote(name)} {rest}" if rest else f"event={_quote(name)}"


def event(logger: logging.Logger, level: int, name: str, *, exc_info: object = False, **values: Any) -> None:
    """Log one structured event: `event=NAME` and its fields, quoted as logfmt; a true `exc_info`
    adds the traceback being handled (kept on the same line by OneLineFormatter)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event_text(name, **values), exc_info=bool(exc_info))


def audit(event: str, **values: Any) -> None:
    """One audit event (issued, rejected, revoked, approved)."""
    _audit.info("audit=%s %s", _quote(event), fields(**values))


class OneLineFormatter(logging.Formatter):
    """Every record is exactly one line, whatever its arguments hold.

    Client-chosen strings (a transactionID, a CSR subject, a failInfoText
    echo) reach log messages through `%s` in many places; escaping here, once
    for every record, means none of them can end a line and forge the next
    event, whether or not its caller went through `fields()`. Tracebacks
    (`--log-level debug`) stay in the record too, as one escaped line.
    """

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """RFC 3339 in UTC with milliseconds (2026-12-03T13:40:00.123Z): one logfmt token, no space."""
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # hypercorn's access log is noisy per request and carries the full query (a GET PKIOperation).
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
