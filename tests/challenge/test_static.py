from __future__ import annotations

import dataclasses

import pytest

from scepd.challenge.static import StaticChallenge
from scepd.enroll.pipeline import Rejected
from scepd.scep.constants import FailInfo
from tests.support.pki import Terminal, csr, enrollment, key, self_signed

SECRET = "s3cret-Ünïcode-challenge"


def request(challenge: bytes | None):  # type: ignore[no-untyped-def]
    k = key()
    return enrollment(csr(k, "device", challenge), self_signed(k, "device"))


async def test_right_secret_is_accepted_and_marked_static(terminal: Terminal) -> None:
    e = request(SECRET.encode("utf-8"))
    issued = await StaticChallenge(SECRET)(e, terminal)
    assert terminal.seen == [dataclasses.replace(e, challenge_mode="static")]  # the request, marked
    assert terminal.modes == ["static"] and e.challenge_mode == "none"
    assert issued.certificate.public_key() == e.csr.public_key()


@pytest.mark.parametrize(
    ("challenge", "reason"),
    [
        (None, "challenge password missing"),
        (b"wrong", "challenge password mismatch"),
        (SECRET.encode("utf-8") + b"x", "challenge password mismatch"),
        (SECRET.encode("utf-8")[:-1], "challenge password mismatch"),
        (b"", "challenge password mismatch"),
    ],
)
async def test_missing_or_wrong_secret_is_rejected(terminal: Terminal, challenge: bytes | None, reason: str) -> None:
    e = request(challenge)
    with pytest.raises(Rejected) as info:
        await StaticChallenge(SECRET)(e, terminal)
    assert info.value.fail_info is FailInfo.BAD_REQUEST
    assert info.value.reason == reason
    assert terminal.seen == []  # nothing was issued
    assert e.challenge_mode == "none"


async def test_reason_never_contains_the_secret_or_what_was_sent(terminal: Terminal) -> None:
    sent = "almost-" + SECRET
    with pytest.raises(Rejected) as info:
        await StaticChallenge(SECRET)(request(sent.encode()), terminal)
    text = f"{info.value.reason} {info.value} {info.value.args!r}"
    assert SECRET not in text and sent not in text and "almost" not in text


def test_secret_is_not_in_repr_and_empty_secret_refused() -> None:
    assert SECRET not in repr(StaticChallenge(SECRET))
    with pytest.raises(ValueError):
        StaticChallenge("")
