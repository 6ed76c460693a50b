"""The profile step with real CSRs: names accepted, imposed or trimmed; keys and hashes; renewals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scepd.config import ConfigError, parse
from scepd.enroll.pipeline import Enrollment, Issued, Pending, Rejected, compose
from scepd.enroll.profiles import INTUNE_SID_URI_PREFIX, OID_UPN, Profile, ProfileStep
from scepd.enroll.steps import SupersedeRenewed
from scepd.scep.constants import FailInfo
from scepd.store.sqlite import SqliteStore
from tests.support.pki import Ca, Terminal, enrollment, record_for
from tests.test_config import with_

SID_URI = INTUNE_SID_URI_PREFIX + "S-1-5-21-1004336348-1177238915-682003330-512"
_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def upn(value: str) -> x509.OtherName:
    # UTF8String, DER: tag 0x0c, short length
    raw = value.encode()
    return x509.OtherName(OID_UPN, bytes([0x0C, len(raw)]) + raw)


def make_csr(
    subject: list[tuple[x509.ObjectIdentifier, str]] | None = None,
    sans: list[x509.GeneralName] | None = None,
    key: Any = None,
    hash: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    attrs = [
        x509.NameAttribute(oid, v) for oid, v in (subject if subject is not None else [(NameOID.COMMON_NAME, "dev-1")])
    ]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key or _EC_KEY, hash or hashes.SHA256())


def san_of(profile: Profile, csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    for ext in profile.extensions(csr):
        if isinstance(ext.value, x509.SubjectAlternativeName):
            return list(ext.value)
    return []


def refused(profile: Profile, csr: x509.CertificateSigningRequest) -> Rejected:
    with pytest.raises(Rejected) as info:
        profile.check_request(csr)
    return info.value


# -- names -------------------------------------------------------------------


def test_default_profile_copies_every_common_san_form() -> None:
    sans = [
        x509.DNSName("dev-1.example.com"),
        x509.RFC822Name("a@example.com"),
        upn("a@example.com"),
        x509.UniformResourceIdentifier(SID_URI),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    csr = make_csr(sans=sans)
    Profile().check_request(csr)
    assert san_of(Profile(), csr) == sans


def test_intune_sid_uri_is_copied_under_a_uri_prefix_rule() -> None:
    profile = Profile(san_accept=frozenset({"uri", "upn"}), san_uri_prefixes=(INTUNE_SID_URI_PREFIX,))
    csr = make_csr(sans=[upn("u@example.com"), x509.UniformResourceIdentifier(SID_URI)])
    profile.check_request(csr)
    assert x509.UniformResourceIdentifier(SID_URI) in san_of(profile, csr)


def test_san_form_not_accepted_is_bad_request_naming_it() -> None:
    profile = Profile(san_accept=frozenset({"upn", "email"}))
    e = refused(profile, make_csr(sans=[x509.DNSName("evil.example.net")]))
    assert e.fail_info is FailInfo.BAD_REQUEST
    assert "dns:evil.example.net" in e.reason and "'default'" in e.reason


def test_uri_outside_the_prefixes_is_refused() -> None:
    profile = Profile(san_uri_prefixes=(INTUNE_SID_URI_PREFIX,))
    e = refused(profile, make_csr(sans=[x509.UniformResourceIdentifier("https://attacker.example/")]))
    assert e.fail_info is FailInfo.BAD_REQUEST and "uri:https://attacker.example/" in e.reason


def test_dns_suffix_rule() -> None:
    profile = Profile(san_dns_suffixes=("corp.example.com",))
    profile.check_request(make_csr(sans=[x509.DNSName("pc1.corp.example.com"), x509.DNSName("corp.example.com")]))
    e = refused(profile, make_csr(sans=[x509.DNSName("pc1.notcorp.example.com")]))
    assert "pc1.notcorp.example.com" in e.reason


def test_other_general_names_are_never_accepted() -> None:
    e = refused(Profile(), make_csr(sans=[x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))]))
    assert e.fail_info is FailInfo.BAD_REQUEST and "other:RegisteredID" in e.reason


def test_trim_drops_disallowed_sans_and_keeps_the_rest() -> None:
    profile = Profile(san_accept=frozenset({"uri"}), on_disallowed="trim")
    csr = make_csr(sans=[x509.DNSName("x.example"), x509.UniformResourceIdentifier(SID_URI)])
    profile.check_request(csr)
    assert san_of(profile, csr) == [x509.UniformResourceIdentifier(SID_URI)]


def test_subject_attribute_not_accepted_is_refused_or_trimmed() -> None:
    csr = make_csr([(NameOID.COMMON_NAME, "dev-1"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "admins")])
    strict = Profile(subject_accept=frozenset({"CN"}))
    e = refused(strict, csr)
    assert e.fail_info is FailInfo.BAD_REQUEST and "subject attribute OU" in e.reason
    trim = Profile(subject_accept=frozenset({"CN"}), on_disallowed="trim")
    trim.check_request(csr)
    assert trim.subject(csr).rfc4514_string() == "CN=dev-1"


def test_subject_suffix_is_imposed_and_replaces_requested_values() -> None:
    profile = Profile(subject_accept=frozenset({"CN", "O"}), subject_suffix="O=Example Corp,C=DE")
    csr = make_csr([(NameOID.ORGANIZATION_NAME, "Not Example"), (NameOID.COMMON_NAME, "dev-1")])
    profile.check_request(csr)
    assert profile.subject(csr).rfc4514_string() == "CN=dev-1,O=Example Corp,C=DE"


def test_nothing_left_to_certify_is_refused() -> None:
    profile = Profile(subject_accept=frozenset({"CN"}), on_disallowed="trim")
    e = refused(profile, make_csr([(NameOID.ORGANIZATIONAL_UNIT_NAME, "x")]))
    assert e.fail_info is FailInfo.BAD_REQUEST and "names no subject" in e.reason


def test_san_is_critical_when_the_subject_is_empty() -> None:
    csr = make_csr([], sans=[x509.RFC822Name("a@example.com")])
    [ext] = [e for e in Profile().extensions(csr) if e.oid == x509.SubjectAlternativeName.oid]
    assert ext.critical


def test_copy_san_false_drops_sans() -> None:
    assert san_of(Profile(copy_san=False), make_csr(sans=[x509.DNSName("x.example")])) == []


# -- keys and hashes ------------------------------------------------------------


def test_small_rsa_key_is_bad_alg() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    e = refused(Profile(), make_csr(key=weak))
    assert e.fail_info is FailInfo.BAD_ALG and "1024" in e.reason


def test_key_type_not_allowed_is_bad_alg() -> None:
    e = refused(Profile(allowed_key_types=frozenset({"rsa"})), make_csr())
    assert e.fail_info is FailInfo.BAD_ALG and "EC keys" in e.reason


def test_curve_below_minimum_is_bad_alg() -> None:
    e = refused(Profile(min_ec_bits=384), make_csr())
    assert e.fail_info is FailInfo.BAD_ALG and "256 bits" in e.reason


def test_csr_hash_not_allowed_is_bad_alg() -> None:
    profile = Profile(allowed_csr_hashes=frozenset({"sha384"}))
    e = refused(profile, make_csr(hash=hashes.SHA256()))
    assert e.fail_info is FailInfo.BAD_ALG and "sha256" in e.reason
    profile.check_request(make_csr(hash=hashes.SHA384()))


# -- the step ----------------------------------------------------------------


async def test_renewal_must_keep_the_subject(ca: Ca, terminal: Terminal) -> None:
    old = ca.issue(_EC_KEY.public_key(), "dev-1")
    request = make_csr([(NameOID.COMMON_NAME, "someone-else")])
    e = dataclasses.replace(enrollment(request, old), renewal_of=old.serial_number)
    with pytest.raises(Rejected) as info:
        await ProfileStep(Profile(name="devices"))(e, terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST and "keep the subject" in info.value.reason
    assert info.value.profile == "devices"  # the answer is counted under the profile that refused it
    assert terminal.seen == []


async def test_renewal_with_revoke_superseded_revokes_the_old_certificate(
    ca: Ca, terminal: Terminal, store: SqliteStore
) -> None:
    """The profile step only decides; the store step after it revokes, as the daemon composes them."""
    old = ca.issue(_EC_KEY.public_key(), "dev-1")
    await store.put_issued(record_for(old))
    request = make_csr([(NameOID.COMMON_NAME, "dev-1"), (NameOID.ORGANIZATION_NAME, "scepd tests")])
    e = dataclasses.replace(enrollment(request, old), renewal_of=old.serial_number)
    profile = Profile(revoke_superseded=True)
    await compose([ProfileStep(profile), SupersedeRenewed(store, revoke=profile.revoke_superseded)], terminal)(e)
    record = await store.get(old.serial_number)
    assert record is not None and record.status.value == "revoked" and record.revocation_reason == "superseded"


async def test_renewal_without_revoke_superseded_only_supersedes(
    ca: Ca, terminal: Terminal, store: SqliteStore
) -> None:
    old = ca.issue(_EC_KEY.public_key(), "dev-1")
    await store.put_issued(record_for(old))
    request = make_csr([(NameOID.COMMON_NAME, "dev-1"), (NameOID.ORGANIZATION_NAME, "scepd tests")])
    e = dataclasses.replace(enrollment(request, old), renewal_of=old.serial_number)
    await compose([ProfileStep(Profile()), SupersedeRenewed(store)], terminal)(e)
    record = await store.get(old.serial_number)
    assert record is not None and record.status.value == "superseded" and record.revoked_at is None


async def test_a_retried_renewal_does_not_revoke(ca: Ca, store: SqliteStore) -> None:
    """A certificate handed back again (reused) was dealt with on the first pass."""
    old = ca.issue(_EC_KEY.public_key(), "dev-1")
    await store.put_issued(record_for(old))
    e = dataclasses.replace(enrollment(make_csr(), old), renewal_of=old.serial_number)

    async def earlier(e: Enrollment) -> Issued:
        return Issued(old, old.public_bytes(Encoding.DER), old.serial_number, e, reused=True)

    await SupersedeRenewed(store, revoke=True)(e, earlier)
    record = await store.get(old.serial_number)
    assert record is not None and record.status.value == "superseded"


async def test_step_hands_on_a_copy_with_profile_and_type(ca: Ca, terminal: Terminal) -> None:
    e = enrollment(make_csr(), ca.certificate)
    issued = await ProfileStep(Profile(name="users", certificate_type="user"))(e, terminal)
    (seen,) = terminal.seen
    assert seen.profile_name == "users" and seen.certificate_type == "user"
    assert issued.enrollment is seen
    assert e.profile_name == "default" and e.certificate_type is None  # what the step was given is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.profile_name = "users"  # type: ignore[misc]


async def test_a_hold_below_the_step_names_the_profile(ca: Ca) -> None:
    async def hold(e: Enrollment) -> Issued:
        raise Pending()

    with pytest.raises(Pending) as info:
        await ProfileStep(Profile(name="wifi"))(enrollment(make_csr(), ca.certificate), hold)
    assert info.value.profile == "wifi"


# -- configuration -----------------------------------------------------------


def test_profile_keys_parse() -> None:
    data = with_()
    data["profiles"] = {
        "intune-user": {
            "type": "user",
            "subject_accept": ["CN", "E"],
            "subject_suffix": "O=Example,C=DE",
            "san_accept": ["upn", "email", "uri"],
            "san_uri_prefixes": [INTUNE_SID_URI_PREFIX],
            "san_dns_suffixes": [".corp.example"],
            "on_disallowed": "trim",
            "key_types": ["ec"],
            "min_ec_bits": 384,
            "csr_hashes": ["sha256", "sha384"],
            "extended_key_usage": ["1.3.6.1.5.5.7.3.4"],
            "revoke_superseded": True,
            "approval": True,
            "pending_ttl_hours": 12,
        }
    }
    p = parse(data, Path("/etc/scepd/scepd.toml")).profiles["intune-user"]
    assert p.certificate_type == "user" and p.subject_accept == {"CN", "E"}
    assert p.san_dns_suffixes == ("corp.example",) and p.allowed_key_types == {"ec"}
    assert p.approval and p.pending_ttl == dt.timedelta(hours=12) and p.revoke_superseded


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("type", "robot", "device, user"),
        ("san_accept", ["x400"], "unknown value 'x400'"),
        ("subject_accept", ["CN", "FOO"], "unknown value 'FOO'"),
        ("on_disallowed", "ignore", "refuse, trim"),
        ("key_types", ["dsa"], "unknown value 'dsa'"),
        ("csr_hashes", ["md5"], "unknown value 'md5'"),
        ("min_ec_bits", 128, "P-256"),
        ("subject_suffix", "not a name", "RFC 4514"),
        ("pending_ttl_hours", 0, "more than 0"),
    ],
)
def test_profile_key_errors_name_the_key(key: str, value: Any, words: str) -> None:
    data = with_()
    data["profiles"] = {"p": {key: value}}
    with pytest.raises(ConfigError) as info:
        parse(data, Path("/etc/scepd/scepd.toml"))
    assert info.value.key == f"profiles.p.{key}" and words in info.value.reason
