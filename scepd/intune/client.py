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
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    transport_reason,
)
from scepd.intune.settings import IntuneSettings
from scepd.logs import event

log = logging.getLogger("scepd.intune")


@dataclass(frozen=True)
class Verdict:
    """Intune's answer to a ScepActions call: `code` as sent, raw, never mapped.

    `request_id` is the client-request-id of the exchange that got it: Microsoft
    support finds a call by it."""

    code: str
    description: str
    request_id: str = ""

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


def issuing_authority_name(certificate: x509.Certificate) -> str:
    """The issuingCertificateAuthority scepd sends by default: the issuer DN, RFC 4514."""
    return certificate.issuer.rfc4514_string()


def expiry_text(when: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.fffZ` (contract §5.1)."""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _observe(action: str, result: str, seconds: float) -> None:
    metrics.INTUNE_CALLS.labels(action, result).inc()
    metrics.INTUNE_CALL_SECONDS.labels(action).observe(seconds)


@dataclass(frozen=True)
class Finding:
    """One line of `scepd intune check`."""

    what: str
    ok: bool
    detail: str


def _describe(e: IntuneError) -> str:
    return f"{e}" + (f" (client-request-id {e.request_id})" if e.request_id else "")


@dataclass(frozen=True)
class _Reply:
    action: str
    body: dict[str, Any]
    request_id: str


class IntuneClient:
    """One per daemon: it owns the token cache and the discovered service map."""

    REDISCOVER_MISSING = 60.0  # seconds before a provider missing from discovery is looked for again

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
            retry=settings.retry,
            clock=clock,
            observe=_observe,
        )
        self.graph_scope = contract.scope(settings.graph_url.rstrip("/"))
        self.intune_scope = contract.scope(settings.intune_resource_url)
        self._services: dict[str, str] | None = None
        self._discovered_at = -float("inf")
        self._discovery_lock = trio.Lock()
        self._urls: dict[tuple[str, str], httpx.URL] = {}

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
        issuing_authority: str | None = None,
    ) -> Verdict:
        """`issuing_authority` defaults to the certificate's issuer (RFC 4514): Intune files
        revocation requests under this string, so the sync must poll with exactly it."""
        body = {
            "notification": {
                "transactionId": transaction_id,
                "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
                "certificateThumbprint": thumbprint(certificate),
                "certificateSerialNumber": serial_text(certificate.serial_number),
                "certificateExpirationDateUtc": expiry_text(certificate.not_valid_after_utc),
                "issuingCertificateAuthority": issuing_authority or issuing_authority_name(certificate),
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
        answer = (
            await self._post(
                "download_revocations",
                contract.PKI_PROVIDER,
                contract.DOWNLOAD_REVOCATIONS,
                contract.PKI_API_VERSION,
                body,
            )
        ).body
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
        reply = await self._post(
            "upload_revocations", contract.PKI_PROVIDER, contract.UPLOAD_REVOCATIONS, contract.PKI_API_VERSION, body
        )
        value = reply.body.get("value")
        if value is not True and value != "true":
            event(log, logging.WARNING, "intune_upload_refused", client_request_id=reply.request_id, value=value)
            raise IntuneBadResponse(f"uploadRevocationResults answered value={value!r}")

    # -- readiness --------------------------------------------------------------

    async def check(self) -> str | None:
        """Readiness: the Intune token can be had and discovery lists the SCEP validation service.

        A tenant without the PKI connector still validates and notifies; that is a note, not
        a failure (issue 16)."""
        await self.tokens.token(self.intune_scope)
        await self._service(contract.SCEP_PROVIDER)
        if not await self.has_service(contract.PKI_PROVIDER):
            return f"revocation sync off: discovery lists no {contract.PKI_PROVIDER}"
        return None

    async def diagnose(self) -> list[Finding]:
        """What `scepd intune check` prints: each credential and permission tried in turn.

        The Intune role is proved by a validateRequest whose certificateRequest is not a
        CSR: Intune answers it (CertificateRequestDecodingFailed) only to a caller holding
        scep_challenge_provider, and nothing can be issued from it."""
        findings: list[Finding] = []

        async def step(what: str, work: Callable[[], Any]) -> Any:
            try:
                result = await work()
            except IntuneError as e:
                findings.append(Finding(what, False, _describe(e)))
                return None
            return result

        graph = await step("Entra token for Microsoft Graph", lambda: self.tokens.token(self.graph_scope))
        if graph is not None:
            findings.append(Finding("Entra token for Microsoft Graph", True, self.graph_scope))
            services = await step("Graph Application.Read.All (Intune service discovery)", self._fresh_services)
            if services is not None:
                findings.append(
                    Finding(
                        "Graph Application.Read.All (Intune service discovery)",
                        True,
                        f"{len(services)} endpoints listed",
                    )
                )
                for provider in (contract.SCEP_PROVIDER, contract.PKI_PROVIDER):
                    uri = services.get(provider.lower())
                    note = (
                        ""
                        if uri
                        else (
                            " (required: no validation without it)"
                            if provider == contract.SCEP_PROVIDER
                            else " (revocation sync stays off without it)"
                        )
                    )
                    findings.append(Finding(f"discovered {provider}", uri is not None, (uri or "not listed") + note))
        intune = await step("Entra token for Intune", lambda: self.tokens.token(self.intune_scope))
        if intune is not None:
            findings.append(Finding("Entra token for Intune", True, self.intune_scope))
            if graph is not None and self._services and contract.SCEP_PROVIDER.lower() in self._services:
                what = "Intune scep_challenge_provider (validateRequest with a non-CSR)"
                verdict = await step(
                    what,
                    lambda: self.validate("scepd-intune-check-" + str(uuid.uuid4()), b"scepd intune check: not a CSR"),
                )
                if verdict is not None:
                    findings.append(
                        Finding(what, True, f"Intune answered {verdict.code} (client-request-id {verdict.request_id})")
                    )
        return findings

    async def _fresh_services(self) -> dict[str, str]:
        async with self._discovery_lock:
            self._services = await self._discover()
            self._discovered_at = self.clock()
            return dict(self._services)

    # -- plumbing ---------------------------------------------------------------

    async def _scep(self, action: str, suffix: str, body: Mapping[str, Any]) -> _Reply:
        return await self._post(action, contract.SCEP_PROVIDER, suffix, contract.SCEP_API_VERSION, body)

    @staticmethod
    def _verdict(reply: _Reply) -> Verdict:
        answer = reply.body
        code, description = answer.get("code"), answer.get("errorDescription", "")
        # Java requires both keys; C# takes a null errorDescription (issue 16), and so do we.
        if description is None:
            description = ""
        if not isinstance(code, str) or not isinstance(description, str):
            raise IntuneBadResponse("the answer lacks code or errorDescription")
        verdict = Verdict(code, description, reply.request_id)
        if not verdict.success:
            event(
                log,
                logging.WARNING,
                "intune_verdict",
                action=reply.action,
                client_request_id=reply.request_id,
                code=code,
                error_description=description[:300],
            )
        return verdict

    async def _service(self, provider: str) -> str:
        async with self._discovery_lock:
            fresh = self._services is None
            if self._services is None:
                self._services = await self._discover()
                self._discovered_at = self.clock()
            uri = self._services.get(provider.lower())
            # A provider missing from a list cached earlier may be listed now. The validation
            # service is required, so look again at once (the revocation sync may have cached the
            # list while Graph lacked it); the PKI connector is optional, so only now and then
            # (a tenant may license it later), never dropping the list the SCEP calls use.
            if uri is None and not fresh:
                required = provider == contract.SCEP_PROVIDER
                if required or self.clock() - self._discovered_at >= self.REDISCOVER_MISSING:
                    self._services = await self._discover()
                    self._discovered_at = self.clock()
                    uri = self._services.get(provider.lower())
            if uri is None and provider == contract.SCEP_PROVIDER:
                self._services = None  # maybe licensed or granted later: ask again next time
            if uri is None:
                raise IntuneServiceNotFound(f"Graph discovery does not list {provider}")
            return uri

    async def has_service(self, provider: str) -> bool:
        try:
            await self._service(provider)
        except IntuneServiceNotFound:
            return False
        return True

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
            answer = (await self._call("discovery", "GET", url, self.graph_scope, {}, None)).body
            for item in answer.get("value") or []:
                if (
                    isinstance(item, dict)
                    and isinstance(item.get("providerName"), str)
                    and isinstance(item.get("uri"), str)
                ):
                    services.setdefault(item["providerName"].lower(), item["uri"])  # first wins, as in Java
            link = answer.get("@odata.nextLink")
            url = link if isinstance(link, str) else None
        if not isinstance(answer.get("value"), list):
            raise IntuneBadResponse("Graph discovery answered without a value list")
        return services

    async def _post(self, action: str, provider: str, suffix: str, api_version: str, body: Mapping[str, Any]) -> _Reply:
        headers = {"api-version": api_version}

        async def url() -> httpx.URL:
            service = await self._service(provider)
            # Parsed once per discovered service: httpx checks a URL string character by character,
            # a measurable share of an Intune call's CPU under load (bench/intune_load.py).
            parsed = self._urls.get((service, suffix))
            if parsed is None:
                parsed = self._urls[(service, suffix)] = httpx.URL(f"{service.rstrip('/')}/{suffix}")
            return parsed

        return await self._call(action, "POST", url, self.intune_scope, headers, body, discovered=True)

    async def _call(
        self,
        action: str,
        method: str,
        url: str | Callable[[], Awaitable[httpx.URL]],
        scope: str,
        extra_headers: Mapping[str, str],
        body: Mapping[str, Any] | None,
        *,
        discovered: bool = False,
    ) -> _Reply:
        """One logical call: attempts, token refresh, backoff, discovery reset, metrics.

        Each HTTP exchange carries a fresh client-request-id (as Microsoft's clients send) and
        is logged with it: debug when it worked, warning with Intune's error when not."""
        started = self.clock()
        result = "error"
        refreshed = False
        attempt = 0
        policy = self.settings.retry
        try:
            while True:
                token = await self.tokens.token(scope)
                target = url if isinstance(url, str) else await url()
                request_id = str(uuid.uuid4())

                def note(
                    level: int, result: str, *, _id: str = request_id, _n: int = attempt + 1, **detail: Any
                ) -> None:
                    """One `intune_call` event for this attempt: its client-request-id is what Microsoft asks for."""
                    event(
                        log,
                        level,
                        "intune_call",
                        action=action,
                        client_request_id=_id,
                        attempt=_n,
                        result=result,
                        **detail,
                    )

                headers = {
                    "Authorization": f"Bearer {token}",
                    "client-request-id": request_id,
                    "UserAgent": self.settings.provider_name,  # sic, no hyphen (§3)
                    "User-Agent": self.settings.provider_name,
                    **extra_headers,
                }
                retry_after: str | None = None
                sent = self.clock()
                try:
                    if body is None:
                        response = await self.http.request(
                            method, target, headers=headers, timeout=self.settings.timeout
                        )
                    else:
                        headers["Content-Type"] = "application/json; charset=utf-8"
                        response = await self.http.request(
                            method, target, headers=headers, json=body, timeout=self.settings.timeout
                        )
                except httpx.TransportError as e:
                    if discovered:
                        self._forget_services()
                    failure: IntuneError = IntuneTransportError(action, transport_reason(e))
                    failure.request_id = request_id
                    result = "timeout" if isinstance(e, httpx.TimeoutException) else "transport"
                    note(
                        logging.WARNING,
                        result,
                        error=transport_reason(e),
                        seconds=f"{self.clock() - sent:.3f}",
                    )
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        try:
                            answer = response.json()
                        except ValueError:
                            answer = None
                        if not isinstance(answer, dict):
                            result = "bad_response"
                            note(
                                logging.WARNING,
                                result,
                                status=status,
                            )
                            raise IntuneBadResponse(f"{action}: the answer is not a JSON object")
                        result = "ok"
                        if log.isEnabledFor(logging.DEBUG):  # the common case: skip formatting the fields
                            note(
                                logging.DEBUG,
                                result,
                                status=status,
                                seconds=f"{self.clock() - sent:.3f}",
                            )
                        return _Reply(action, answer, request_id)
                    if discovered:
                        self._forget_services()
                    result = f"http_{status}"
                    code, message = _error_detail(response)
                    note(
                        logging.WARNING,
                        result,
                        code=code,
                        error_description=message,
                        seconds=f"{self.clock() - sent:.3f}",
                    )
                    failure = IntuneHttpError(action, status, code)
                    failure.request_id = request_id
                    if status == 401 and not refreshed:
                        refreshed = True
                        self.tokens.invalidate(scope, token)
                        continue
                    if not policy.retryable(status) and not (status == 404 and discovered and attempt == 0):
                        raise failure
                    retry_after = response.headers.get("retry-after")
                if policy.exhausted(attempt):
                    raise failure
                attempt += 1
                await trio.sleep(policy.pause(attempt, retry_after))
        finally:
            _observe(action, result, self.clock() - started)


def _error_detail(response: httpx.Response) -> tuple[str, str]:
    """`error.code` and `error.message` (Intune, Graph) or `error`/`error_description` (Entra), for the log."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:120]
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("code", ""))[:80], str(error.get("message", ""))[:300]
    return str(error or "")[:80], str(body.get("error_description", ""))[:300]
