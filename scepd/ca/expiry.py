"""Warn before the CA or RA certificate ends.

A CA certificate that expires takes every certificate it issued with it, and
the fix (a new CA certificate, rolled out to every relying party) takes weeks.
So the daemon says so in the log, at start-up and every few hours, from
`ca.expiry_warning_days` before the end; the `scepd_ca_certificate_expiry_seconds`
gauge carries the same fact for alerting. Whether a rollover certificate is
configured (GetNextCACert) is part of the warning: it is the remedy.

The RA certificate ends much sooner (two years by default) and an expired one
stops every enrollment, since clients will not encrypt to it nor trust its
replies; its remedy is `scepd ca ra-renew` and a restart
(`scepd_ra_certificate_expiry_seconds`, docs/keys.md).
"""

from __future__ import annotations

import datetime as dt
import logging

import trio
from cryptography import x509

from scepd.clock import Clock
from scepd.logs import event, event_text

log = logging.getLogger("scepd.ca")


def expiry_warning(
    certificate: x509.Certificate, warn_within: dt.timedelta, now: dt.datetime, *, rollover: bool
) -> str | None:
    """The warning to log now, or None while the end is further away than `warn_within`."""
    left = certificate.not_valid_after_utc - now
    if left > warn_within:
        return None
    subject = certificate.subject.rfc4514_string()
    end = certificate.not_valid_after_utc.isoformat()
    if left <= dt.timedelta(0):
        return event_text("ca_certificate_expired", subject=subject, not_after=end, rollover_configured=rollover)
    return event_text(
        "ca_certificate_expiring", subject=subject, not_after=end, days_left=left.days, rollover_configured=rollover
    )


def ra_expiry_warning(certificate: x509.Certificate, warn_within: dt.timedelta, now: dt.datetime) -> str | None:
    """As `expiry_warning`, for the RA certificate; its remedy is a command, not a rollover."""
    left = certificate.not_valid_after_utc - now
    if left > warn_within:
        return None
    subject = certificate.subject.rfc4514_string()
    end = certificate.not_valid_after_utc.isoformat()
    expired = left <= dt.timedelta(0)
    return event_text(
        "ra_certificate_expired" if expired else "ra_certificate_expiring",
        days_left=None if expired else left.days,
        subject=subject,
        not_after=end,
        remedy="scepd ca ra-renew, then restart scepd",
    )


async def watch_expiry(
    certificate: x509.Certificate,
    warn_within: dt.timedelta,
    *,
    rollover: bool,
    clock: Clock,
    ra_certificate: x509.Certificate | None = None,
    interval: float = 6 * 3600,
    retry: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Log the CA's (and RA's) expiry warnings every `interval` seconds, for the daemon's whole life.

    A fault in a check (the clock, say) must not end the daemon: it is logged
    once per episode, retried after `retry` seconds, and its end is logged too.
    """
    task_status.started()
    failing = False
    while True:
        try:
            now = clock()
            warnings = [expiry_warning(certificate, warn_within, now, rollover=rollover)]
            if ra_certificate is not None:
                warnings.append(ra_expiry_warning(ra_certificate, warn_within, now))
        except Exception as e:  # noqa: BLE001 - any fault here is ours, and must not stop the daemon
            if not failing:
                event(log, logging.ERROR, "expiry_check_failed", error=f"{type(e).__name__}: {e}", retry_seconds=retry)
                failing = True
            await trio.sleep(retry)
            continue
        if failing:
            event(log, logging.INFO, "expiry_check_recovered")
            failing = False
        for warning in warnings:
            if warning is not None:
                log.warning(warning)
        await trio.sleep(interval)
