"""Choose one authorisation step per request.

A deployment usually wants "a request signed by a certificate this CA issued
is a renewal; anything else needs the challenge". `FirstMatching(renewal,
static)` says that. Each challenge step offers a cheap, side-effect-free
`applies(enrollment)`: the renewal step applies when the signer names this CA
as issuer, the static and one-time steps apply always. The combinator runs the
first step that applies, and that step alone decides.

There is deliberately no fall-through on refusal: a request signed by a
revoked or expired certificate of this CA is refused as such, not retried
against the shared secret; the client that wants a fresh enrollment signs
with a self-signed certificate, as for a first enrollment.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected, Step
from scepd.scep.constants import FailInfo


@runtime_checkable
class ChallengeStep(Protocol):
    """A step that can say, cheaply and without side effects, whether it is the one to ask."""

    def applies(self, enrollment: Enrollment) -> bool: ...

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued: ...


def applies(step: Step, enrollment: Enrollment) -> bool:
    """A step without `applies` (an ordinary pipeline step) applies to everything."""
    return step.applies(enrollment) if isinstance(step, ChallengeStep) else True


class FirstMatching:
    """Run the first of `steps` that applies to the enrollment."""

    def __init__(self, *steps: Step) -> None:
        if not steps:
            raise ValueError("FirstMatching needs at least one step")
        self.steps = steps

    def applies(self, enrollment: Enrollment) -> bool:
        return any(applies(step, enrollment) for step in self.steps)

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        for step in self.steps:
            if applies(step, enrollment):
                return await step(enrollment, next)
        raise Rejected(FailInfo.BAD_REQUEST, "no authorisation method accepts this kind of request")
