"""Structured logging: one event per line, key=value fields, to stderr for journald.

Callers pass fields, never preformatted secrets: no PIN, challenge or key
material is ever a field. `audit` events are the trail an operator greps for
one transaction or serial.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_audit = logging.getLogger("scepd.audit")


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\\'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def fields(**values: Any) -> str:
    return " ".join(f"{k}={_quote(v)}" for k, v in values.items() if v is not None)


def audit(event: str, **values: Any) -> None:
    """One audit event (issued, rejected, revoked, approved)."""
    _audit.info("audit=%s %s", event, fields(**values))


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # hypercorn's access log is noisy per request and carries the full query (a GET PKIOperation).
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
