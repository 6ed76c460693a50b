"""Pull revocation requests from Intune, revoke, report back (contract §6).

Intune queues a request when a device is wiped or unenrolled; the CA must
come and get it. Each round first re-uploads results Intune has not yet
acknowledged (left by an outage or a restart), then downloads, applies and
uploads. A request is applied and recorded in one store transaction, so one
that Intune offers again is answered with its first outcome and never
counted twice; a result is only marked uploaded once Intune said `true`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from scepd import metrics
from scepd.clock import Clock, utc_now
from scepd.intune.client import IntuneClient, RevocationRequest, RevocationResult
from scepd.intune.contract import MAX_REVOCATION_BATCH, PKI_PROVIDER, RevocationErrorCode
from scepd.intune.errors import IntuneError
from scepd.keys.base import KeyError_
from scepd.logs import audit, event
from scepd.store.base import RevocationOutcome, RevocationRequestRecord, StoreError
from scepd.store.roles import IntuneLedger

log = logging.getLogger("scepd.intune")

# A wiped or unenrolled device no longer needs its certificate (RFC 5280 reason 5).
REVOCATION_REASON = "cessationOfOperation"

_RESULT_CODES = {
    RevocationOutcome.REVOKED: RevocationErrorCode.NONE,
    RevocationOutcome.NOT_FOUND: RevocationErrorCode.CERTIFICATE_NOT_FOUND_ERROR,
    RevocationOutcome.ALREADY_REVOKED: RevocationErrorCode.CONFLICT_ERROR,
}
_MESSAGES = {
    RevocationOutcome.NOT_FOUND: "this CA issued no certificate with this serial number and issuer",
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


def _same_name(a: str, b: str) -> bool:
    # How Intune matches issuerName is [U]; a request that names us in another case is ours.
    return a.strip().lower() == b.strip().lower()


class RevocationSync:
    """One round: re-upload unacknowledged results, then for every CA name scepd has sent in a
    success notification, download, answer every request downloaded, upload, and page on."""

    MAX_PAGES = 20  # per issuer name and round: a queue longer than this waits for the next round
    RETRY_FIRST = 10.0  # seconds before the first retry of a failed round (never more than the interval)

    def __init__(
        self,
        client: IntuneClient,
        store: IntuneLedger,
        *,
        issuer_name: str,
        interval: float = 3600.0,
        batch: int = 100,
        on_revoked: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = utc_now,
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
        self._refresh_due = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever. No fault ends the task: a failed round is logged once per episode,
        counted, and retried sooner than the interval, backing off to it (issue 14)."""
        task_status.started()
        failures = 0
        episode: str | None = None  # the kind of fault the current episode began with
        enabled: bool | None = None
        while True:
            pause = self.interval
            try:
                if not await self.client.has_service(PKI_PROVIDER):
                    if enabled is not False:
                        event(
                            log,
                            logging.WARNING,
                            "intune_revocation_sync_off",
                            reason=f"discovery lists no {PKI_PROVIDER}; validation and notification go on",
                        )
                    enabled = False
                    metrics.INTUNE_REVOCATION_SYNC_ENABLED.set(0)
                else:
                    if enabled is False:
                        event(log, logging.INFO, "intune_revocation_sync_on")
                    enabled = True
                    metrics.INTUNE_REVOCATION_SYNC_ENABLED.set(1)
                    report = await self.sync_once()
                    if report.downloaded or report.uploaded:
                        event(
                            log,
                            logging.INFO,
                            "intune_revocation_sync",
                            downloaded=report.downloaded,
                            revoked=report.revoked,
                            uploaded=report.uploaded,
                        )
                if episode is not None:
                    event(log, logging.INFO, "intune_revocation_sync_recovered", failed_rounds=failures)
                failures, episode = 0, None
            except Exception as e:  # noqa: BLE001 - any fault: Intune, store, token (the CRL refresh), or a bug
                kind = _fault_kind(e)
                metrics.INTUNE_REVOCATION_SYNC_ERRORS.labels(kind).inc()
                failures += 1
                if episode is None:
                    episode = kind
                    event(
                        log,
                        logging.WARNING,
                        "intune_revocation_sync_failed",
                        kind=kind,
                        error=(str(e).splitlines() or [type(e).__name__])[0][:200],
                        client_request_id=getattr(e, "request_id", "") or None,
                        exc_info=kind == "internal",
                    )
                pause = min(self.interval, self.RETRY_FIRST * 2 ** (failures - 1))
            await trio.sleep(pause)

    async def issuer_names(self) -> list[str]:
        """The current name first, then every other name the ledger says was sent."""
        names = [self.issuer_name]
        for name in await self.store.notified_issuers():
            if name not in names:
                names.append(name)
        return names

    async def sync_once(self) -> SyncReport:
        uploaded = await self._upload_pending()
        names = await self.issuer_names()
        downloaded = revoked = 0
        for name in names:
            answered: set[str] = set()
            for _ in range(self.MAX_PAGES):
                requests = await self.client.download_revocations(self.batch, name)
                if not requests or all(r.request_context in answered for r in requests):
                    break  # empty, or Intune offers again what it was just answered: next round
                downloaded += len(requests)
                results = []
                for request in requests:
                    record, created, was_revoked = await self._apply(request, names)
                    revoked += was_revoked
                    results.append(_result(record))
                    answered.add(request.request_context)
                # Exactly one result per request downloaded, re-offered ones included (with their
                # first outcome): a request left unanswered is offered again and fills the batch.
                await self.client.upload_revocation_results(results)
                await self.store.mark_revocation_uploaded([r.request_context for r in results], self.clock())
                uploaded += len(results)
                if len(requests) < self.batch:
                    break
        if (revoked or self._refresh_due) and self.on_revoked is not None:
            # Kept due until it works: a refresh that failed (the token) is tried again next round.
            self._refresh_due = True
            await self.on_revoked()
            self._refresh_due = False
        return SyncReport(downloaded, revoked, uploaded)

    async def _apply(self, request: RevocationRequest, names: list[str]) -> tuple[RevocationRequestRecord, bool, bool]:
        foreign = request.issuer_name is not None and not any(_same_name(request.issuer_name, n) for n in names)
        # Another CA's certificate may share a serial with one of ours: never revoke ours for it.
        serial = None if foreign else parse_serial(request.serial_number)
        record, created = await self.store.apply_revocation_request(
            request.request_context, request.serial_number, serial, REVOCATION_REASON, self.clock()
        )
        if not created:
            return record, False, False
        metrics.INTUNE_REVOCATIONS.labels("foreign_issuer" if foreign else record.outcome.value).inc()
        if foreign:
            event(
                log,
                logging.WARNING,
                "intune_revocation_foreign_issuer",
                request_context=request.request_context,
                issuer=request.issuer_name,
            )
        if record.outcome is RevocationOutcome.REVOKED:
            audit(
                "revoked",
                serial=request.serial_number,
                reason=REVOCATION_REASON,
                source="intune",
                request_context=request.request_context,
            )
            return record, True, True
        return record, True, False

    async def _upload_pending(self) -> int:
        pending = await self.store.unuploaded_revocation_requests()
        done = 0
        for start in range(0, len(pending), self.batch):
            chunk = pending[start : start + self.batch]
            await self.client.upload_revocation_results([_result(r) for r in chunk])
            await self.store.mark_revocation_uploaded([r.request_context for r in chunk], self.clock())
            done += len(chunk)
        return done


def _fault_kind(e: Exception) -> str:
    if isinstance(e, IntuneError):
        return e.code
    if isinstance(e, (StoreError, sqlite3.Error)):
        return "store"
    if isinstance(e, KeyError_):
        return "token"
    return "internal"


def _result(record: RevocationRequestRecord) -> RevocationResult:
    return RevocationResult(record.request_context, _RESULT_CODES[record.outcome], _MESSAGES.get(record.outcome))
