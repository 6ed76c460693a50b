"""What becomes of a renewed certificate, with the steps composed as the daemon composes them.

The renewal step and the profile step only decide; `SupersedeRenewed`, a
store step of the issuing end, marks the old certificate superseded (or
revokes it, with the profile's revoke_superseded), whether the renewal is
issued at once or held for approval and issued on a later poll.
"""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from scepd.challenge.renewal import SignerIsIssuedCertificate
from scepd.enroll.approval import ApprovalGate
from scepd.enroll.pipeline import Enrollment, Issued, Next, Pending, Rejected, compose
from scepd.enroll.profiles import Profile, ProfileStep
from scepd.enroll.steps import IdempotentRetry, StoreIssued, SupersedeRenewed, csr_digest
from scepd.scep.constants import FailInfo, MessageType
from scepd.store.base import CertStatus, PendingStatus
from scepd.store.sqlite import SqliteStore
from tests.support.pki import NOW, Ca, Terminal, csr, enrollment, key, record_for


def chains(store: SqliteStore, ca: Ca, terminal: Terminal, profile: Profile) -> tuple[Next, ApprovalGate]:
    """build_services' composition for one endpoint: renewal, profile, (gate), then the store steps."""
    policy = ProfileStep(profile)
    issue = compose(
        [SupersedeRenewed(store, revoke=profile.revoke_superseded), IdempotentRetry(store), StoreIssued(store)],
        terminal,
    )
    gate = ApprovalGate(store, profile.pending_ttl, release=compose([policy], issue))
    steps = [SignerIsIssuedCertificate(store, ca.certificate), policy] + ([gate] if profile.approval else [])
    return compose(steps, issue), gate


@pytest.mark.parametrize(("revoke", "after"), [(False, CertStatus.SUPERSEDED), (True, CertStatus.REVOKED)])
async def test_a_renewal_issued_at_once_replaces_the_old_certificate(
    store: SqliteStore, ca: Ca, terminal: Terminal, revoke: bool, after: CertStatus
) -> None:
    old = ca.issue(key().public_key(), "device")
    await store.put_issued(record_for(old))
    chain, _ = chains(store, ca, terminal, Profile(revoke_superseded=revoke))
    issued = await chain(enrollment(csr(key(), "device", None), old, message_type=MessageType.RENEWAL_REQ))
    assert issued.enrollment.renewal_of == old.serial_number and issued.enrollment.challenge_mode == "renewal"
    record = await store.get(old.serial_number)
    assert record is not None and record.status is after
    new = await store.get(issued.serial)
    assert new is not None and new.renewal_of == old.serial_number and new.status is CertStatus.VALID


@pytest.mark.parametrize(("revoke", "after"), [(False, CertStatus.SUPERSEDED), (True, CertStatus.REVOKED)])
async def test_a_held_renewal_replaces_the_old_certificate_when_its_poll_issues(
    store: SqliteStore, ca: Ca, terminal: Terminal, revoke: bool, after: CertStatus
) -> None:
    old = ca.issue(key().public_key(), "device")
    await store.put_issued(record_for(old))
    chain, gate = chains(store, ca, terminal, Profile(name="held", approval=True, revoke_superseded=revoke))
    request = csr(key(), "device", None)
    e = enrollment(request, old, message_type=MessageType.RENEWAL_REQ)

    with pytest.raises(Pending) as held_answer:
        await chain(e)
    assert held_answer.value.profile == "held"
    record = await store.get(old.serial_number)
    assert record is not None and record.status is CertStatus.VALID  # nothing is replaced while it waits

    held = await store.find_pending(e.transaction_id)
    assert held is not None and held.renewal_of == old.serial_number
    assert await store.decide_pending(held.id, True, "ok", NOW) is not None
    held, polled = await gate.held_for(e.transaction_id, request.subject, old, NOW + dt.timedelta(minutes=1))
    issued = await gate.poll(held, polled)

    record = await store.get(old.serial_number)
    assert record is not None and record.status is after
    done = await store.get_pending(held.id)
    assert done is not None and done.status is PendingStatus.ISSUED and done.serial == issued.serial
    # Polling again hands back the same certificate and changes nothing more.
    again = await gate.poll(done, polled)
    assert again.serial == issued.serial and again.reused
    record = await store.get(old.serial_number)
    assert record is not None and record.status is after


@pytest.mark.parametrize(("revoke", "after"), [(False, CertStatus.SUPERSEDED), (True, CertStatus.REVOKED)])
async def test_two_processes_renewing_one_certificate_at_once_issue_one_renewal(
    store: SqliteStore, ca: Ca, revoke: bool, after: CertStatus
) -> None:
    """Two chains, as two serving processes (or two nodes) build them, each with its own per-serial lock:
    both renewals pass the standing check before either signs (the terminal holds them until both are
    there). One client gets the new certificate; the other's, already recorded, is revoked and refused."""
    old = ca.issue(key().public_key(), "device")
    await store.put_issued(record_for(old))
    both_signing = trio.Event()
    arrived: list[str] = []

    async def held_terminal(e: Enrollment) -> Issued:
        arrived.append(e.transaction_id)
        if len(arrived) == 2:
            both_signing.set()
        await both_signing.wait()
        return await Terminal(ca)(e)

    results: dict[str, Issued | Rejected] = {}
    requests = [enrollment(csr(key(), "device", None), old, message_type=MessageType.RENEWAL_REQ) for _ in range(2)]

    async def renew(e: Enrollment) -> None:
        chain, _ = chains(store, ca, held_terminal, Profile(revoke_superseded=revoke))  # type: ignore[arg-type]
        try:
            results[e.transaction_id] = await chain(e)
        except Rejected as refused:
            results[e.transaction_id] = refused

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for e in requests:
                nursery.start_soon(renew, e)

    won = [r for r in results.values() if isinstance(r, Issued)]
    lost = [r for r in results.values() if isinstance(r, Rejected)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].fail_info is FailInfo.BAD_CERT_ID
    record = await store.get(old.serial_number)
    assert record is not None and record.status is after
    new = await store.get(won[0].serial)
    assert new is not None and new.status is CertStatus.VALID and new.renewal_of == old.serial_number
    loser = next(e for e in requests if e.transaction_id not in {won[0].enrollment.transaction_id})
    undelivered = await store.find_by_transaction(loser.transaction_id, csr_digest(loser.csr_der))
    assert undelivered is not None and undelivered.status is CertStatus.REVOKED
    assert undelivered.revocation_reason == "superseded"

    # The loser's client retries its request: refused again, not handed the revoked certificate.
    chain, _ = chains(store, ca, Terminal(ca), Profile(revoke_superseded=revoke))
    with pytest.raises(Rejected) as again:
        await chain(loser)
    assert again.value.fail_info is FailInfo.BAD_CERT_ID


async def test_a_held_renewal_whose_certificate_was_renewed_meanwhile_is_refused_at_every_poll(
    store: SqliteStore, ca: Ca, terminal: Terminal
) -> None:
    """Approved, but another renewal of the same certificate (on another node, say) went through first:
    the poll is refused, and so is the next one, which must not get the certificate revoked unsent."""
    old = ca.issue(key().public_key(), "device")
    await store.put_issued(record_for(old))
    chain, gate = chains(store, ca, terminal, Profile(name="held", approval=True))
    request = csr(key(), "device", None)
    e = enrollment(request, old, message_type=MessageType.RENEWAL_REQ)
    with pytest.raises(Pending):
        await chain(e)
    held = await store.find_pending(e.transaction_id)
    assert held is not None and await store.decide_pending(held.id, True, "ok", NOW) is not None

    direct, _ = chains(store, ca, terminal, Profile())  # the other renewal, on an endpoint without approval
    first = await direct(enrollment(csr(key(), "device", None), old, message_type=MessageType.RENEWAL_REQ))

    later = NOW + dt.timedelta(minutes=1)
    for _ in range(2):
        held, polled = await gate.held_for(e.transaction_id, request.subject, old, later)
        with pytest.raises(Rejected) as refused:
            await gate.poll(held, polled)
        assert refused.value.fail_info is FailInfo.BAD_CERT_ID
    current = await store.get(first.serial)
    assert current is not None and current.status is CertStatus.VALID
