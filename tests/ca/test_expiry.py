from __future__ import annotations

import datetime as dt
import logging

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scepd.ca.expiry import expiry_warning, ra_expiry_warning, watch_expiry

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def ca_ending(at: dt.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(at - dt.timedelta(days=3650))
        .not_valid_after(at)
        .sign(key, hashes.SHA256())
    )


def test_no_warning_while_the_end_is_far() -> None:
    assert expiry_warning(ca_ending(NOW + dt.timedelta(days=31)), dt.timedelta(days=30), NOW, rollover=False) is None


def test_warning_inside_the_window_names_days_left_and_rollover() -> None:
    text = expiry_warning(ca_ending(NOW + dt.timedelta(days=29, hours=1)), dt.timedelta(days=30), NOW, rollover=False)
    assert text is not None
    assert "event=ca_certificate_expiring" in text and "days_left=29" in text and "rollover_configured=False" in text


def test_an_expired_ca_is_its_own_event() -> None:
    text = expiry_warning(ca_ending(NOW - dt.timedelta(seconds=1)), dt.timedelta(days=30), NOW, rollover=True)
    assert text is not None and text.startswith("event=ca_certificate_expired ") and "rollover_configured=True" in text


def test_ra_warning_names_the_renewal_command() -> None:
    ra = ca_ending(NOW + dt.timedelta(days=10, hours=1))
    text = ra_expiry_warning(ra, dt.timedelta(days=30), NOW)
    assert text is not None and text.startswith("event=ra_certificate_expiring days_left=10 ")
    assert "scepd ca ra-renew" in text
    assert ra_expiry_warning(ra, dt.timedelta(days=5), NOW) is None
    assert (ra_expiry_warning(ra, dt.timedelta(days=30), NOW + dt.timedelta(days=11)) or "").startswith(
        "event=ra_certificate_expired "
    )


async def test_watch_expiry_survives_faults_logs_once_per_episode(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that fails (here the clock) is logged once, retried, and its recovery logged; the loop goes on."""
    calls = 0

    def clock() -> dt.datetime:
        nonlocal calls
        calls += 1
        if calls in (2, 3, 4):
            raise OSError("clock source unavailable")
        return NOW

    ca, ra = ca_ending(NOW + dt.timedelta(days=20)), ca_ending(NOW + dt.timedelta(days=10))
    caplog.set_level(logging.INFO, logger="scepd.ca")
    with trio.move_on_after(3 * 3600 + 5 * 60):
        await watch_expiry(
            ca, dt.timedelta(days=30), rollover=False, clock=clock, ra_certificate=ra, interval=3600, retry=60
        )
    events = [r.getMessage().split()[0] for r in caplog.records]
    assert events == [
        "event=ca_certificate_expiring",
        "event=ra_certificate_expiring",  # t=0
        "event=expiry_check_failed",  # t=1h, then silent retries at +60 s, +120 s
        "event=expiry_check_recovered",
        "event=ca_certificate_expiring",
        "event=ra_certificate_expiring",
        "event=ca_certificate_expiring",
        "event=ra_certificate_expiring",  # t=2h03m
        "event=ca_certificate_expiring",
        "event=ra_certificate_expiring",  # t=3h03m
    ], events
    assert calls == 7
