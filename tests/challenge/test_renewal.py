from __future__ import annotations

import datetime as dt

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from scepd.challenge.renewal import SignerIsIssuedCertificate
from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected, compose
from scepd.enroll.steps import SupersedeRenewed
from scepd.scep.constants import FailInfo, MessageType
from scepd.store.base import CertStatus
from scepd.store.sqlite import SqliteStore
from tests.support.pki import (
    NOW,
    Ca,
    Terminal,
    csr,
    enrollment,
    failing,
    key,
    record_for,
    self_signed,
)


def superseding(store: SqliteStore, next: Next) -> Next:
    """What the daemon puts between the renewal step and issuance: the store step that supersedes."""
    return compose([SupersedeRenewed(store)], next)


async def issued_device(
    ca: Ca,
    store: SqliteStore,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=335),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A device key and a certificate this CA issued for it, stored as valid."""
    k = key()
    cert = ca.issue(k.public_key(), "device", not_before, not_after)
    await store.put_issued(record_for(cert))
    return k, cert


async def test_renewal_is_accepted_and_old_certificate_superseded(
    ca: Ca, store: SqliteStore, terminal: Terminal
) -> None:
    _, old = await issued_device(ca, store)
    e = enrollment(csr(key(), "device", None), old, message_type=MessageType.RENEWAL_REQ)
    issued = await SignerIsIssuedCertificate(store, ca.certificate)(e, superseding(store, terminal))
    assert terminal.modes == ["renewal"]
    assert terminal.seen[0].renewal_of == old.serial_number
    assert issued.serial != old.serial_number
    stored = await store.get(old.serial_number)
    assert stored is not None and stored.status is CertStatus.SUPERSEDED


async def test_pkcsreq_signed_by_issued_certificate_is_a_renewal_too(
    ca: Ca, store: SqliteStore, terminal: Terminal
) -> None:
    _, old = await issued_device(ca, store)
    e = enrollment(csr(key(), "device", None), old, message_type=MessageType.PKCS_REQ)
    await SignerIsIssuedCertificate(store, ca.certificate)(e, terminal)
    assert terminal.seen[0].renewal_of == old.serial_number and terminal.seen[0].challenge_mode == "renewal"
    assert e.renewal_of is None and e.challenge_mode == "none"  # the step handed on a copy


async def test_failed_issuance_leaves_old_certificate_valid(ca: Ca, store: SqliteStore) -> None:
    _, old = await issued_device(ca, store)
    e = enrollment(csr(key(), "device", None), old)
    with pytest.raises(Rejected):
        await SignerIsIssuedCertificate(store, ca.certificate)(
            e,
            superseding(store, failing(Rejected(FailInfo.BAD_REQUEST, "policy"))),  # type: ignore[arg-type]
        )
    stored = await store.get(old.serial_number)
    assert stored is not None and stored.status is CertStatus.VALID


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - dt.timedelta(days=400), NOW - dt.timedelta(seconds=1)),  # expired
        (NOW + dt.timedelta(seconds=1), NOW + dt.timedelta(days=400)),  # not yet valid
    ],
)
async def test_signer_outside_validity_is_bad_time(
    ca: Ca, store: SqliteStore, terminal: Terminal, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    _, old = await issued_device(ca, store, not_before=not_before, not_after=not_after)
    with pytest.raises(Rejected) as info:
        await SignerIsIssuedCertificate(store, ca.certificate)(enrollment(csr(key(), "d", None), old), terminal)
    assert info.value.fail_info is FailInfo.BAD_TIME
    assert terminal.seen == []
    stored = await store.get(old.serial_number)
    assert stored is not None and stored.status is CertStatus.VALID


async def test_revoked_signer_is_bad_cert_id(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    _, old = await issued_device(ca, store)
    await store.revoke(old.serial_number, "keyCompromise", NOW)
    with pytest.raises(Rejected) as info:
        await SignerIsIssuedCertificate(store, ca.certificate)(enrollment(csr(key(), "d", None), old), terminal)
    assert info.value.fail_info is FailInfo.BAD_CERT_ID
    assert "revoked" in info.value.reason
    assert terminal.seen == []


async def test_signer_unknown_to_the_store_is_refused(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    cert = ca.issue(key().public_key(), "never-stored")
    with pytest.raises(Rejected) as info:
        await SignerIsIssuedCertificate(store, ca.certificate)(enrollment(csr(key(), "d", None), cert), terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert terminal.seen == []


async def test_foreign_signer_is_refused(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    other = Ca("some other CA")
    foreign = other.issue(key().public_key(), "device")
    await store.put_issued(record_for(foreign))  # even a serial the store knows does not help
    step = SignerIsIssuedCertificate(store, ca.certificate)
    e = enrollment(csr(key(), "d", None), foreign)
    assert not step.applies(e)
    with pytest.raises(Rejected) as info:
        await step(e, terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert terminal.seen == []


async def test_look_alike_ca_with_same_name_is_refused(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    impostor = Ca("scepd test CA")  # same subject, different key
    assert impostor.certificate.subject == ca.certificate.subject
    forged = impostor.issue(key().public_key(), "device")
    await store.put_issued(record_for(forged))
    step = SignerIsIssuedCertificate(store, ca.certificate)
    e = enrollment(csr(key(), "d", None), forged)
    assert step.applies(e)  # the cheap name check passes...
    with pytest.raises(Rejected) as info:
        await step(e, terminal)  # ...the signature check does not
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert terminal.seen == []


async def test_self_signed_signer_is_refused(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    k = key()
    e = enrollment(csr(k, "d", b"secret"), self_signed(k, "d"))
    step = SignerIsIssuedCertificate(store, ca.certificate)
    assert not step.applies(e)
    with pytest.raises(Rejected):
        await step(e, terminal)
    assert terminal.seen == []


async def test_stored_certificate_must_match_the_signer(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    serial = 0x1234567890ABCDEF
    stored_cert = ca.issue(key().public_key(), "device", serial=serial)
    await store.put_issued(record_for(stored_cert))
    other_cert = ca.issue(key().public_key(), "device", serial=serial)  # same CA, same serial, other key
    with pytest.raises(Rejected) as info:
        await SignerIsIssuedCertificate(store, ca.certificate)(enrollment(csr(key(), "d", None), other_cert), terminal)
    assert info.value.fail_info is FailInfo.BAD_CERT_ID


async def test_second_renewal_of_the_same_certificate_is_refused(
    ca: Ca, store: SqliteStore, terminal: Terminal
) -> None:
    _, old = await issued_device(ca, store)
    step = SignerIsIssuedCertificate(store, ca.certificate)
    await step(enrollment(csr(key(), "d", None), old, transaction_id="first"), superseding(store, terminal))
    with pytest.raises(Rejected) as info:
        await step(enrollment(csr(key(), "d", None), old, transaction_id="second"), superseding(store, terminal))
    assert info.value.fail_info is FailInfo.BAD_CERT_ID
    assert len(terminal.seen) == 1


async def test_retry_of_a_completed_renewal_passes_through(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    """The reply was lost: the client resends the same transaction, signed by the now superseded cert."""
    _, old = await issued_device(ca, store)
    request = csr(key(), "d", None)
    step = SignerIsIssuedCertificate(store, ca.certificate)

    async def issue_and_store(e: Enrollment) -> Issued:  # what StoreIssued + signing do downstream
        issued = await terminal(e)
        rec = record_for(issued.certificate, e.transaction_id, e.csr_der, renewal_of=e.renewal_of)
        await store.put_issued(rec)
        return issued

    first = await step(enrollment(request, old, transaction_id="tx-1"), superseding(store, issue_and_store))
    stored = await store.get(old.serial_number)
    assert stored is not None and stored.status is CertStatus.SUPERSEDED

    async def reuse(e: Enrollment) -> Issued:  # what IdempotentRetry does downstream
        return Issued(first.certificate, first.der, first.serial, e, reused=True)

    again = await step(enrollment(request, old, transaction_id="tx-1"), reuse)
    assert again.serial == first.serial and again.reused
    # A different CSR under the same transaction is not a retry.
    with pytest.raises(Rejected):
        await step(enrollment(csr(key(), "d", None), old, transaction_id="tx-1"), reuse)


async def test_concurrent_renewals_of_one_certificate_issue_once(
    ca: Ca, store: SqliteStore, terminal: Terminal
) -> None:
    _, old = await issued_device(ca, store)
    step = SignerIsIssuedCertificate(store, ca.certificate)
    outcomes: list[str] = []

    async def slow_terminal(e: Enrollment) -> Issued:
        await trio.sleep(0.01)  # give the others a chance to slip in
        return await terminal(e)

    async def attempt(i: int) -> None:
        try:
            await step(
                enrollment(csr(key(), "d", None), old, transaction_id=f"tx-{i}"), superseding(store, slow_terminal)
            )
            outcomes.append("issued")
        except Rejected as e:
            outcomes.append(e.fail_info.name)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(attempt, i)
    assert sorted(outcomes) == ["BAD_CERT_ID"] * 4 + ["issued"]
    assert len(step._locks) == 0  # the lock table does not grow
