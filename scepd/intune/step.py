"""The Intune challenge as one step of the enrollment chain (contract §0, §4, §5).

Before: `validateRequest` with the whole CSR; only `Success` lets the chain go
on, and anything else (another code, an HTTP error, a timeout, nonsense) is a
FAILURE with badRequest. After: `successNotification` before the certificate
leaves; if Intune does not take it, the certificate is not delivered and is
revoked in the store, so nothing Intune never heard of stays valid. If the
chain fails after a successful validation, `failureNotification` tells
Intune why. Every notification's outcome is recorded in the store.

A device that lost the reply and resends the same request (same
transactionID and CSR) gets the certificate again without a second
validation, but only if Intune was told of it: its one-time challenge is
spent, so asking again could only fail.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Protocol

import trio
from cryptography import x509

from scepd import metrics
from scepd.clock import Clock, utc_now
from scepd.enroll.pipeline import Enrollment, Issued, Next, Pending, Rejected
from scepd.enroll.steps import csr_digest
from scepd.intune import contract
from scepd.intune.client import IntuneClient, Verdict, issuing_authority_name
from scepd.intune.errors import IntuneError
from scepd.logs import audit, event
from scepd.scep.constants import FailInfo
from scepd.store.base import CertStatus, NotificationKind, NotificationRecord
from scepd.store.roles import IntuneLedger, IssuedCertificates

log = logging.getLogger("scepd.intune")

UNDELIVERED_REASON = "cessationOfOperation"


class IntuneStepStore(IssuedCertificates, IntuneLedger, Protocol):
    """What the step needs: certificates (to find a resend, to revoke one Intune never took) and the ledger."""


class IntuneChallenge:
    def __init__(
        self,
        client: IntuneClient,
        store: IntuneStepStore,
        *,
        ca_configuration: str | None = None,
        certificate_authority: str | None = None,
        issuing_authority: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.client = client
        self.store = store
        self.ca_configuration = ca_configuration
        self.certificate_authority = certificate_authority
        self.issuing_authority = issuing_authority  # None: each certificate's issuer DN
        self.clock = clock

    def applies(self, enrollment: Enrollment) -> bool:
        return True

    async def __call__(self, enrollment: Enrollment, next: Next) -> Issued:
        tid = enrollment.transaction_id
        delivered = await self._already_delivered(enrollment)
        if delivered is not None:
            return delivered
        try:
            verdict = await self.client.validate(tid, enrollment.csr_der)
        except IntuneError as e:
            metrics.INTUNE_VERDICTS.labels("validate", e.code).inc()
            event(
                log,
                logging.WARNING,
                "intune_validate_failed",
                transaction_id=tid,
                error=e.code,
                client_request_id=e.request_id or None,
            )
            raise Rejected(FailInfo.BAD_REQUEST, f"Intune validation could not be done ({e.code})") from e
        metrics.INTUNE_VERDICTS.labels("validate", verdict.code[:64]).inc()
        if not verdict.success:
            event(
                log,
                logging.WARNING,
                "intune_validate_rejected",
                transaction_id=tid,
                code=verdict.code,
                client_request_id=verdict.request_id,
            )
            raise Rejected(FailInfo.BAD_REQUEST, f"Intune rejected the request: {verdict.code}")
        enrollment = replace(enrollment, challenge_mode="intune")

        try:
            issued = await next(enrollment)
        except Pending:
            raise
        except Rejected as e:
            await self._notify_failure(enrollment, contract.HRESULT_POLICY_REFUSED, e.reason)
            raise
        except BaseException as e:
            if isinstance(e, Exception):
                await self._notify_failure(
                    enrollment, contract.HRESULT_CA_FAILURE, "the CA could not issue the certificate"
                )
            raise

        if await self._notify_success(enrollment, issued):
            return issued
        with trio.CancelScope(shield=True):
            await self.store.revoke(issued.serial, UNDELIVERED_REASON, self.clock())
        audit(
            "revoked",
            transaction_id=tid,
            serial=f"{issued.serial:x}",
            reason=UNDELIVERED_REASON,
            source="intune_success_notification_failed",
        )
        raise Rejected(
            FailInfo.BAD_REQUEST,
            "Intune did not acknowledge the certificate; it was not delivered",
            profile=issued.enrollment.profile_name,
        )

    async def _already_delivered(self, enrollment: Enrollment) -> Issued | None:
        found = await self.store.find_by_transaction(enrollment.transaction_id, csr_digest(enrollment.csr_der))
        if found is None:
            return None
        told = await self.store.notifications(enrollment.transaction_id)
        if not any(n.serial == found.serial and n.kind is NotificationKind.SUCCESS and n.delivered for n in told):
            return None
        if found.status is CertStatus.REVOKED:
            return None
        cert = x509.load_der_x509_certificate(found.der)
        return Issued(cert, found.der, found.serial, replace(enrollment, challenge_mode="intune"), reused=True)

    async def _notify_success(self, enrollment: Enrollment, issued: Issued) -> bool:
        verdict: Verdict | None = None
        issuer = self.issuing_authority or issuing_authority_name(issued.certificate)
        request_id = ""
        budget = self.client.settings.notification_budget
        detail = f"budget: no Success within {budget:g} s"
        # One budget for every attempt: the device is waiting on this reply, and a certificate
        # Intune has not acknowledged is not delivered, so past it the safe answer is FAILURE.
        with trio.move_on_after(budget):
            try:
                verdict = await self.client.notify_success(
                    enrollment.transaction_id,
                    enrollment.csr_der,
                    issued.certificate,
                    ca_configuration=self.ca_configuration,
                    certificate_authority=self.certificate_authority,
                    issuing_authority=issuer,
                )
                detail, request_id = verdict.code, verdict.request_id
            except IntuneError as e:
                detail, request_id = f"{e.code}: {e}"[:200], e.request_id
        ok = verdict is not None and verdict.success
        label = verdict.code if verdict else ("budget" if detail.startswith("budget") else "error")
        metrics.INTUNE_VERDICTS.labels("success_notification", label[:64]).inc()
        # The issuer is recorded even when Intune did not answer Success: it may have kept the
        # notification anyway, and then files revocation requests under this name.
        await self._record(enrollment, issued.serial, NotificationKind.SUCCESS, ok, detail, issuer)
        if not ok:
            event(
                log,
                logging.WARNING,
                "intune_success_notification_failed",
                transaction_id=enrollment.transaction_id,
                detail=detail,
                client_request_id=request_id or None,
            )
        return ok

    async def _notify_failure(self, enrollment: Enrollment, hresult: int, description: str) -> None:
        """Best effort, and shielded: the client's FAILURE answer does not depend on it."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.client.settings.timeout * (self.client.settings.retries + 1) + 5):
                verdict: Verdict | None = None
                try:
                    verdict = await self.client.notify_failure(
                        enrollment.transaction_id, enrollment.csr_der, hresult, description
                    )
                    detail = verdict.code
                except IntuneError as e:
                    detail = f"{e.code}: {e}"[:200]
                ok = verdict is not None and verdict.success
                metrics.INTUNE_VERDICTS.labels(
                    "failure_notification", (verdict.code if verdict else "error")[:64]
                ).inc()
                await self._record(enrollment, None, NotificationKind.FAILURE, ok, f"hResult=0x{hresult:08X} {detail}")

    async def _record(
        self,
        enrollment: Enrollment,
        serial: int | None,
        kind: NotificationKind,
        delivered: bool,
        detail: str,
        issuer: str | None = None,
    ) -> None:
        await self.store.record_notification(
            NotificationRecord(enrollment.transaction_id, serial, kind, delivered, detail, self.clock(), issuer)
        )
