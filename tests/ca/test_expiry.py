from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scepd.ca.expiry import expiry_warning

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def ca_ending(at: dt.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(at - dt.timedelta(days=3650)).not_valid_after(at)
            .sign(key, hashes.SHA256()))


def test_no_warning_while_the_end_is_far() -> None:
    assert expiry_warning(ca_ending(NOW + dt.timedelta(days=31)), dt.timedelta(days=30), NOW, rollover=False) is None


def test_warning_inside_the_window_names_days_left_and_rollover() -> None:
    text = expiry_warning(ca_ending(NOW + dt.timedelta(days=29, hours=1)), dt.timedelta(days=30), NOW, rollover=False)
    assert text is not None
    assert "event=ca_certificate_expiring" in text and "days_left=29" in text and "rollover_configured=False" in text


def test_an_expired_ca_is_its_own_event() -> None:
    text = expiry_warning(ca_ending(NOW - dt.timedelta(seconds=1)), dt.timedelta(days=30), NOW, rollover=True)
    assert text is not None and text.startswith("event=ca_certificate_expired ") and "rollover_configured=True" in text
