from __future__ import annotations

import pytest

from scepd.challenge.anyof import FirstMatching
from scepd.challenge.renewal import SignerIsIssuedCertificate
from scepd.challenge.static import StaticChallenge
from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.scep.constants import FailInfo
from scepd.store.sqlite import SqliteStore
from tests.support.pki import (
    NOW,
    Ca,
    Terminal,
    csr,
    enrollment,
    key,
    record_for,
    self_signed,
)

SECRET = "static-secret"


def chain(ca: Ca, store: SqliteStore) -> FirstMatching:
    return FirstMatching(SignerIsIssuedCertificate(store, ca.certificate), StaticChallenge(SECRET))


async def test_self_signed_request_needs_the_static_challenge(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    k = key()
    await chain(ca, store)(enrollment(csr(k, "d", SECRET.encode()), self_signed(k, "d")), terminal)
    assert terminal.modes == ["static"]
    with pytest.raises(Rejected) as info:
        await chain(ca, store)(enrollment(csr(k, "d", None), self_signed(k, "d")), terminal)
    assert info.value.reason == "challenge password missing"
    assert len(terminal.seen) == 1


async def test_request_signed_by_our_certificate_is_a_renewal_without_challenge(
    ca: Ca, store: SqliteStore, terminal: Terminal
) -> None:
    old = ca.issue(key().public_key(), "d")
    await store.put_issued(record_for(old))
    await chain(ca, store)(enrollment(csr(key(), "d", None), old), terminal)
    assert terminal.modes == ["renewal"]


async def test_refusal_of_the_step_that_applies_is_final(ca: Ca, store: SqliteStore, terminal: Terminal) -> None:
    """A revoked certificate of ours does not get a second chance through the shared secret."""
    old = ca.issue(key().public_key(), "d")
    await store.put_issued(record_for(old))
    await store.revoke(old.serial_number, "keyCompromise", NOW)
    with pytest.raises(Rejected) as info:
        await chain(ca, store)(enrollment(csr(key(), "d", SECRET.encode()), old), terminal)
    assert info.value.fail_info is FailInfo.BAD_CERT_ID
    assert terminal.seen == []


class Never:
    def __init__(self) -> None:
        self.called = False

    def applies(self, enrollment: Enrollment) -> bool:
        return False

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        self.called = True
        return await next(enrollment)


async def test_steps_without_applies_always_apply_and_order_matters(terminal: Terminal) -> None:
    calls: list[str] = []

    async def plain(enrollment: Enrollment, next: Next) -> Issued:
        calls.append("plain")
        return await next(enrollment)

    never = Never()
    k = key()
    await FirstMatching(never, plain, StaticChallenge(SECRET))(
        enrollment(csr(k, "d", None), self_signed(k, "d")), terminal
    )
    assert calls == ["plain"] and not never.called and len(terminal.seen) == 1


async def test_nothing_applies_is_bad_request(terminal: Terminal) -> None:
    k = key()
    combinator = FirstMatching(Never())
    e = enrollment(csr(k, "d", None), self_signed(k, "d"))
    assert not combinator.applies(e)
    with pytest.raises(Rejected) as info:
        await combinator(e, terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert terminal.seen == []


def test_needs_at_least_one_step() -> None:
    with pytest.raises(ValueError):
        FirstMatching()
