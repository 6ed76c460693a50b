"""The Intune calls scepd makes: discovery, ScepActions and the PKI connector (contract §2-§6).

Policy, from the contract's §8 and the issue:
- every call has a bounded timeout and a bounded number of attempts;
- transport errors, 429 and 5xx are retried (`retries` times) with backoff,
  honouring a Retry-After up to a cap; any other status is final;
- a 401 drops the token and is retried once with a fresh one;
- the discovered service map is dropped on a transport error or any non-2xx
  answer from a discovered host, and redone by the next attempt (the C#
  library's rule, the stricter of Microsoft's two);
- a 200 whose JSON lacks what the contract promises is an error, never a
  guess.
Nothing here decides whether to issue: callers get a `Verdict` or an
`IntuneError` and fail closed on anything but a Success verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepd import metrics
from scepd.intune import contract
from scepd.intune.auth import Credential, TokenSource
from scepd.intune.errors import (
    IntuneBadResponse,
    IntuneError,
    IntuneHttpError,
    IntuneServiceNotFound,
    IntuneTransportError,
)

log = logging.getLogger("scepd.intune")


@dataclass(frozen=True)
class IntuneSettings:
    tenant: str
    client_id: str
    provider_name: str = "scepd/0.1"  # PROVIDER_NAME_AND_VERSION: callerInfo and UserAgent
    authority: str = contract.DEFAULT_AUTHORITY
    graph_url: str = contract.DEFAULT_GRAPH_URL
    intune_resource_url: str = contract.DEFAULT_INTUNE_RESOURCE_URL
    intune_app_id: str = contract.INTUNE_APP_ID
    timeout: float = 30.0  # seconds, per HTTP exchange
    retries: int = 2  # further attempts after the first, for transport errors, 429 and 5xx
    backoff: float = 0.5  # first pause; doubles each retry
    max_retry_after: float = 10.0


@dataclass(frozen=True)
class Verdict:
    """Intune's answer to a ScepActions call: `code` as sent, raw, never mapped."""

    code: str
    description: str

    @property
    def success(self) -> bool:
        return self.code == contract.SUCCESS_CODE


@dataclass(frozen=True)
class RevocationRequest:
    request_context: str
    serial_number: str
    issuer_name: str | None
    ca_configuration: str | None


@dataclass(frozen=True)
class RevocationResult:
    request_context: str
    error_code: contract.RevocationErrorCode
    error_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_code is contract.RevocationErrorCode.NONE


def serial_text(serial: int) -> str:
    """Upper-case hex of even length, the Windows convention (contract §5.1)."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def thumbprint(certificate: x509.Certificate) -> str:
    return hashlib.sha1(certificate.public_bytes(Encoding.DER)).hexdigest().upper()


def expiry_text(when: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.fffZ` (contract §5.1)."""
    utc = when.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _observe(action: str, result: str, seconds: float) -> None:
    metrics.INTUNE_CALLS.labels(action, result).inc()
    metrics.INTUNE_CALL_SECONDS.labels(action).observe(seconds)


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        return None


class IntuneClient:
    """One per daemon: it owns the token cache and the discovered service map."""

    def __init__(
        self,
        settings: IntuneSettings,
        credential: Credential,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock
        self.tokens = TokenSource(
            http,
            authority=settings.authority,
            tenant=settings.tenant,
            client_id=settings.client_id,
            credential=credential,
            timeout=settings.timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            clock=clock,
            observe=_observe,
        )
        self.graph_scope = contract.scope(settings.graph_url.rstrip("/"))
        self.intune_scope = contract.scope(settings.intune_resource_url)
        self._services: dict[str, str] | None = None
        self._discovery_lock = trio.Lock()

    # -- ScepActions ------------------------------------------------------------

    async def validate(self, transaction_id: str, csr_der: bytes) -> Verdict:
        body = {
            "request": {
                "transactionId": transaction_id,
                "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
                "callerInfo": self.settings.provider_name,
            }
        }
        return self._verdict(await self._scep("validate", contract.VALIDATE, body))

    async def notify_success(
        self,
        transaction_id: str,
        csr_der: bytes,
        certificate: x509.Certificate,
        *,
        ca_configuration: str | None = None,
        certificate_authority: str | None = None,
    ) -> Verdict:
        body = {
            "notification": {
                "transactionId": transaction_id,
                "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
                "certificateThumbprint": thumbprint(certificate),
                "certificateSerialNumber": serial_text(certificate.serial_number),
                "certificateExpirationDateUtc": expiry_text(certificate.not_valid_after_utc),
                "issuingCertificateAuthority": certificate.issuer.rfc4514_string(),
                "callerInfo": self.settings.provider_name,
                "caConfiguration": ca_configuration,
                "certificateAuthority": certificate_authority,
            }
        }
        return self._verdict(await self._scep("success_notification", contract.SUCCESS_NOTIFICATION, body))

    async def notify_failure(self, transaction_id: str, csr_der: bytes, hresult: int, description: str) -> Verdict:
        body = {
            "notification": {
                "transactionId": transaction_id,
                "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
                "hResult": hresult,
                "errorDescription": description[: contract.MAX_ERROR_DESCRIPTION],
                "callerInfo": self.settings.provider_name,
            }
        }
        return self._verdict(await self._scep("failure_notification", contract.FAILURE_NOTIFICATION, body))

    # -- PKI connector ----------------------------------------------------------

    async def download_revocations(self, max_requests: int, issuer_name: str | None) -> list[RevocationRequest]:
        if not 1 <= max_requests <= contract.MAX_REVOCATION_BATCH:
            raise ValueError(f"max_requests must be 1..{contract.MAX_REVOCATION_BATCH}")
        body = {"downloadParameters": {"maxRequests": max_requests, "issuerName": issuer_name}}
        answer = await self._post(
            "download_revocations", contract.PKI_PROVIDER, contract.DOWNLOAD_REVOCATIONS, contract.PKI_API_VERSION, body
        )
        items = answer.get("value")
        if not isinstance(items, list):
            raise IntuneBadResponse("downloadRevocationRequests: no value list")
        requests = []
        for item in items:
            if not isinstance(item, dict):
                raise IntuneBadResponse("downloadRevocationRequests: an item is not an object")
            context, serial = item.get("requestContext"), item.get("serialNumber")
            if not isinstance(context, str) or not isinstance(serial, str):
                raise IntuneBadResponse("downloadRevocationRequests: requestContext and serialNumber are required")
            issuer, config = item.get("issuerName"), item.get("caConfiguration")
            requests.append(
                RevocationRequest(
                    context,
                    serial,
                    issuer if isinstance(issuer, str) else None,
                    config if isinstance(config, str) else None,
                )
            )
        return requests

    async def upload_revocation_results(self, results: Sequence[RevocationResult]) -> None:
        if not results:
            raise ValueError("the contract forbids an empty upload")
        body = {
            "results": [
                {
                    "requestContext": r.request_context,
                    "succeeded": r.succeeded,
                    "errorCode": r.error_code.wire_name,
                    "errorMessage": None if r.succeeded else (r.error_message or r.error_code.wire_name),
                }
                for r in results
            ]
        }
        answer = await self._post(
            "upload_revocations", contract.PKI_PROVIDER, contract.UPLOAD_REVOCATIONS, contract.PKI_API_VERSION, body
        )
        value = answer.get("value")
        if value is not True and value != "true":
            raise IntuneBadResponse(f"uploadRevocationResults answered value={value!r}")

    # -- readiness --------------------------------------------------------------

    async def check(self) -> None:
        """Both tokens can be had and discovery lists both providers (readiness)."""
        await self.tokens.token(self.intune_scope)
        await self._service(contract.SCEP_PROVIDER)
        await self._service(contract.PKI_PROVIDER)

    # -- plumbing ---------------------------------------------------------------

    async def _scep(self, action: str, suffix: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._post(action, contract.SCEP_PROVIDER, suffix, contract.SCEP_API_VERSION, body)

    @staticmethod
    def _verdict(answer: Mapping[str, Any]) -> Verdict:
        code, description = answer.get("code"), answer.get("errorDescription")
        # Microsoft's Java client requires both keys; so do we (contract §4).
        if not isinstance(code, str) or not isinstance(description, str):
            raise IntuneBadResponse("the answer lacks code or errorDescription")
        return Verdict(code, description)

    async def _service(self, provider: str) -> str:
        async with self._discovery_lock:
            if self._services is None:
                self._services = await self._discover()
            uri = self._services.get(provider.lower())
            if uri is None:
                self._services = None  # maybe licensed or granted later: ask again next time
                raise IntuneServiceNotFound(f"Graph discovery does not list {provider}")
            return uri

    def _forget_services(self) -> None:
        self._services = None

    async def _discover(self) -> dict[str, str]:
        url: str | None = (
            f"{self.settings.graph_url.rstrip('/')}/v1.0/servicePrincipals/appId={self.settings.intune_app_id}/endpoints"
        )
        services: dict[str, str] = {}
        for _ in range(10):  # follow @odata.nextLink, boundedly; Microsoft's clients do not page at all
            if url is None:
                break
            answer = await self._call("discovery", "GET", url, self.graph_scope, {}, None)
            for item in answer.get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("providerName"), str) and isinstance(item.get("uri"), str):
                    services.setdefault(item["providerName"].lower(), item["uri"])  # first wins, as in Java
            link = answer.get("@odata.nextLink")
            url = link if isinstance(link, str) else None
        if not isinstance(answer.get("value"), list):
            raise IntuneBadResponse("Graph discovery answered without a value list")
        return services

    async def _post(
        self, action: str, provider: str, suffix: str, api_version: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        headers = {"api-version": api_version}

        async def url() -> str:
            return f"{(await self._service(provider)).rstrip('/')}/{suffix}"

        return await self._call(action, "POST", url, self.intune_scope, headers, body, discovered=True)

    async def _call(
        self,
        action: str,
        method: str,
        url: str | Callable[[], Any],
        scope: str,
        extra_headers: Mapping[str, str],
        body: Mapping[str, Any] | None,
        *,
        discovered: bool = False,
    ) -> dict[str, Any]:
        """One logical call: attempts, token refresh, backoff, discovery reset, metrics."""
        started = self.clock()
        result = "error"
        refreshed = False
        attempt = 0
        try:
            while True:
                token = await self.tokens.token(scope)
                target = url if isinstance(url, str) else await url()
                headers = {
                    "Authorization": f"Bearer {token}",
                    "client-request-id": str(uuid.uuid4()),
                    "UserAgent": self.settings.provider_name,  # sic, no hyphen (§3)
                    "User-Agent": self.settings.provider_name,
                    **extra_headers,
                }
                pause: float | None = None
                try:
                    if body is None:
                        response = await self.http.request(method, target, headers=headers, timeout=self.settings.timeout)
                    else:
                        headers["Content-Type"] = "application/json; charset=utf-8"
                        response = await self.http.request(
                            method, target, headers=headers, json=body, timeout=self.settings.timeout
                        )
                except httpx.TransportError as e:
                    if discovered:
                        self._forget_services()
                    failure: IntuneError = IntuneTransportError(action, type(e).__name__)
                    result = "timeout" if isinstance(e, httpx.TimeoutException) else "transport"
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        try:
                            answer = response.json()
                        except ValueError:
                            answer = None
                        if not isinstance(answer, dict):
                            result = "bad_response"
                            raise IntuneBadResponse(f"{action}: the answer is not a JSON object")
                        result = "ok"
                        return answer
                    if discovered:
                        self._forget_services()
                    result = f"http_{status}"
                    failure = IntuneHttpError(action, status, _error_code(response))
                    if status == 401 and not refreshed:
                        refreshed = True
                        self.tokens.invalidate(scope, token)
                        continue
                    if status != 429 and status < 500 and not (status == 404 and discovered and attempt == 0):
                        raise failure
                    pause = _retry_after(response, self.settings.max_retry_after)
                if attempt >= self.settings.retries:
                    raise failure
                attempt += 1
                await trio.sleep(pause if pause is not None else self.settings.backoff * 2 ** (attempt - 1))
        finally:
            _observe(action, result, self.clock() - started)
            if result != "ok":
                log.warning("event=intune_call_failed action=%s result=%s attempts=%d", action, result, attempt + 1)


def _error_code(response: httpx.Response) -> str:
    """The `error.code` of an Intune or Graph error body, if it has one (for the log)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", ""))[:80]
    return str(error or "")[:80]
