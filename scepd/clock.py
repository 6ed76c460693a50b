"""The one source of wall-clock time: `utc_now`, passed in wherever time matters.

Code that needs the time takes a `Clock` (a function returning an aware UTC
datetime) with `utc_now` as its default, so a test can hand it a fixed or
stepping clock instead of waiting. Monotonic intervals (timeouts, token
caches) stay on `time.monotonic`; this is for times that end up in
certificates, CRLs, the store and the logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)
