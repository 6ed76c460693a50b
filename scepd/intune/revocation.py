"""Pull revocation requests from Intune, revoke, report back (contract §6).

Intune queues a request when a device is wiped or unenrolled; the CA must
come and get it. Each round first re-uploads results Intune has not yet
acknowledged (left by an outage or a restart), then downloads, applies and
uploads. A request is applied and recorded in one store transaction, so one
that Intune offers again is answered with its first outcome and never
counted twice; a result is only marked uploaded once Intune said `true`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from scepd import metrics
from scepd.intune.client import IntuneClient, RevocationResult
from scepd.intune.contract import MAX_REVOCATION_BATCH, RevocationErrorCode
from scepd.intune.errors import IntuneError
from scepd.logs import audit
from scepd.store.base import RevocationOutcome, RevocationRequestRecord, Store

log = logging.getLogger("scepd.intune")

# A wiped or unenrolled device no longer needs its certificate (RFC 5280 reason 5).
REVOCATION_REASON = "cessationOfOperation"

_RESULT_CODES = {
    RevocationOutcome.REVOKED: RevocationErrorCode.NONE,
    RevocationOutcome.NOT_FOUND: RevocationErrorCode.CERTIFICATE_NOT_FOUND_ERROR,
    RevocationOutcome.ALREADY_REVOKED: RevocationErrorCode.CONFLICT_ERROR,
}
_MESSAGES = {
    RevocationOutcome.NOT_FOUND: "no certificate with this serial number was issued by this CA",
    RevocationOutcome.ALREADY_REVOKED: "the certificate is already revoked",
}
_SEPARATORS = re.compile(r"[\s:-]")


def parse_serial(text: str) -> int | None:
    """We send upper-case hex; accept any case and the usual separators (contract §5.1)."""
    cleaned = _SEPARATORS.sub("", text)
    if not cleaned or len(cleaned) > 40 or not all(c in "0123456789abcdefABCDEF" for c in cleaned):
        return None
    return int(cleaned, 16)


@dataclass(frozen=True)
class SyncReport:
    downloaded: int
    revoked: int
    uploaded: int


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RevocationSync:
    def __init__(
        self,
        client: IntuneClient,
        store: Store,
        *,
        issuer_name: str | None,
        interval: float = 3600.0,
        batch: int = 100,
        on_revoked: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if not 1 <= batch <= MAX_REVOCATION_BATCH:
            raise ValueError(f"batch must be 1..{MAX_REVOCATION_BATCH}")
        self.client = client
        self.store = store
        self.issuer_name = issuer_name
        self.interval = interval
        self.batch = batch
        self.on_revoked = on_revoked
        self.clock = clock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; an Intune outage costs a round, never the task."""
        task_status.started()
        while True:
            try:
                report = await self.sync_once()
                if report.downloaded or report.uploaded:
                    log.info("event=intune_revocation_sync downloaded=%d revoked=%d uploaded=%d",
                             report.downloaded, report.revoked, report.uploaded)
            except IntuneError as e:
                log.warning("event=intune_revocation_sync_failed error=%s", e.code)
            await trio.sleep(self.interval)

    async def sync_once(self) -> SyncReport:
        uploaded = await self._upload_pending()
        requests = await self.client.download_revocations(self.batch, self.issuer_name)
        revoked = 0
        for request in requests:
            if request.issuer_name and self.issuer_name and request.issuer_name != self.issuer_name:
                continue  # another CA's work: leave it unanswered for that CA
            record, created = await self.store.apply_revocation_request(
                request.request_context,
                request.serial_number,
                parse_serial(request.serial_number),
                REVOCATION_REASON,
                self.clock(),
            )
            if not created:
                continue
            metrics.INTUNE_REVOCATIONS.labels(record.outcome.value).inc()
            if record.outcome is RevocationOutcome.REVOKED:
                revoked += 1
                audit("revoked", serial=request.serial_number, reason=REVOCATION_REASON, source="intune",
                      request_context=request.request_context)
        if revoked and self.on_revoked is not None:
            await self.on_revoked()
        uploaded += await self._upload_pending()
        return SyncReport(len(requests), revoked, uploaded)

    async def _upload_pending(self) -> int:
        pending = await self.store.unuploaded_revocation_requests()
        done = 0
        for start in range(0, len(pending), self.batch):
            chunk = pending[start : start + self.batch]
            await self.client.upload_revocation_results([_result(r) for r in chunk])
            await self.store.mark_revocation_uploaded([r.request_context for r in chunk], self.clock())
            done += len(chunk)
        return done


def _result(record: RevocationRequestRecord) -> RevocationResult:
    return RevocationResult(record.request_context, _RESULT_CODES[record.outcome], _MESSAGES.get(record.outcome))
