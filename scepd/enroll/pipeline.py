"""Enrollment as a chain of small steps, each wrapping the next.

A step sees the enrollment, may refuse it (raise `Rejected`), and otherwise
hands it on with `await next(enrollment)`, getting the issued certificate back
on the return path. That shape lets one step act both before and after the
rest: a challenge check only looks before; the store writes after signing; an
Intune step validates before and notifies success or failure after. The chain
is composed once at start-up from the configuration, so adding a step (Jamf, a
webhook) never means editing another.

The enrollment is a frozen value. A step that learns something (the challenge
that authorised the request, the certificate it renews, its profile) hands on
a copy made with `dataclasses.replace`, so what a step was given never changes
behind its back; `Issued.enrollment` tells the caller what the request looked
like where it was issued.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from scepd.scep.constants import FailInfo, MessageType


class Rejected(Exception):
    """The enrollment is refused; the client gets a FAILURE CertRep with `fail_info`.

    `reason` goes to the log and the audit trail; it is also sent as the
    failInfoText, so it must never contain a secret or the challenge.
    `profile` names the profile the request was held to, once the profile
    step has seen it (the metrics label the answer with it).
    """

    def __init__(self, fail_info: FailInfo, reason: str, *, profile: str | None = None) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.reason = reason
        self.profile = profile

    def in_profile(self, profile: str) -> Rejected:
        """The same refusal, naming the profile it happened under."""
        return Rejected(self.fail_info, self.reason, profile=profile)


class Pending(Exception):
    """The request is held for approval; the client gets PENDING and polls."""

    def __init__(self, *, profile: str | None = None) -> None:
        super().__init__("held for approval")
        self.profile = profile

    def in_profile(self, profile: str) -> Pending:
        return Pending(profile=profile)


@dataclass(frozen=True)
class Enrollment:
    """What is known about one PKCSReq/RenewalReq as it moves along the chain.

    The service fills in the request; steps hand on copies with more filled
    in: a challenge step sets `challenge_mode` to the one that authorised the
    request, the renewal step `renewal_of`, the profile step `profile_name`
    and `certificate_type`, the approval gate the CSR an operator reviewed.
    """

    transaction_id: str
    message_type: MessageType
    csr: x509.CertificateSigningRequest
    csr_der: bytes
    signer_certificate: x509.Certificate
    now: dt.datetime
    endpoint: str = "scep"
    challenge_mode: str = "none"
    profile_name: str = "default"
    certificate_type: str | None = None  # the profile's "user" or "device", for the audit trail
    renewal_of: int | None = None  # serial of the certificate this one renews

    @property
    def challenge_password(self) -> str | None:
        """The CSR's challengePassword attribute, if any (PKCS#9, RFC 2985)."""
        try:
            attr = self.csr.attributes.get_attribute_for_oid(x509.oid.AttributeOID.CHALLENGE_PASSWORD)
        except x509.AttributeNotFound:
            return None
        value = attr.value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Issued:
    """The outcome of a successful chain: the certificate the client will get,
    and the enrollment as the step that produced it saw it."""

    certificate: x509.Certificate
    der: bytes
    serial: int
    enrollment: Enrollment
    reused: bool = False  # True when an idempotent retry returned an earlier certificate


Next = Callable[[Enrollment], Awaitable[Issued]]


class Step(Protocol):
    """One link of the chain."""

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued: ...


def compose(steps: Sequence[Step], terminal: Next) -> Next:
    """Build the chain once: steps[0] runs first and wraps everything after it."""
    handler = terminal
    for step in reversed(steps):
        handler = _bind(step, handler)
    return handler


def _bind(step: Step, next_handler: Next) -> Next:
    async def run(enrollment: Enrollment) -> Issued:
        return await step(enrollment, next_handler)

    return run
