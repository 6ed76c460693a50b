"""Warn before the CA certificate ends.

A CA certificate that expires takes every certificate it issued with it, and
the fix (a new CA certificate, rolled out to every relying party) takes weeks.
So the daemon says so in the log, at start-up and every few hours, from
`ca.expiry_warning_days` before the end; the `scepd_ca_certificate_expiry_seconds`
gauge carries the same fact for alerting. Whether a rollover certificate is
configured (GetNextCACert) is part of the warning: it is the remedy.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import trio
from cryptography import x509

log = logging.getLogger("scepd.ca")

Clock = Callable[[], dt.datetime]


def expiry_warning(certificate: x509.Certificate, warn_within: dt.timedelta, now: dt.datetime,
                   *, rollover: bool) -> str | None:
    """The warning to log now, or None while the end is further away than `warn_within`."""
    left = certificate.not_valid_after_utc - now
    if left > warn_within:
        return None
    subject = certificate.subject.rfc4514_string()
    end = certificate.not_valid_after_utc.isoformat()
    if left <= dt.timedelta(0):
        return f"event=ca_certificate_expired subject={subject!r} not_after={end} rollover_configured={rollover}"
    return (f"event=ca_certificate_expiring subject={subject!r} not_after={end} days_left={left.days} "
            f"rollover_configured={rollover}")


async def watch_expiry(
    certificate: x509.Certificate,
    warn_within: dt.timedelta,
    *,
    rollover: bool,
    clock: Clock,
    interval: float = 6 * 3600,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        warning = expiry_warning(certificate, warn_within, clock(), rollover=rollover)
        if warning is not None:
            log.warning(warning)
        await trio.sleep(interval)
