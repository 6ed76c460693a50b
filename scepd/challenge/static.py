"""A shared secret in the CSR's challengePassword (the classic SCEP/NDES mode)."""

from __future__ import annotations

import hmac
from dataclasses import replace

from scepd.enroll.pipeline import Enrollment, Issued, Next, Rejected
from scepd.scep.constants import FailInfo


class StaticChallenge:
    """Accept a request whose challengePassword equals the configured secret.

    The comparison is constant-time, and no reason ever quotes what was sent:
    reasons reach the log and the client's failInfoText.
    """

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the static challenge must not be empty")
        self._secret = secret.encode("utf-8")

    def applies(self, enrollment: Enrollment) -> bool:
        return True

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        password = enrollment.challenge_password
        if password is None:
            raise Rejected(FailInfo.BAD_REQUEST, "challenge password missing")
        if not hmac.compare_digest(password.encode("utf-8"), self._secret):
            raise Rejected(FailInfo.BAD_REQUEST, "challenge password mismatch")
        return await next(replace(enrollment, challenge_mode="static"))

    def __repr__(self) -> str:
        return "StaticChallenge(<secret>)"  # never the secret, even in a traceback
