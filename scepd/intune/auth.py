"""Entra ID client-credentials tokens for Graph and Intune (contract §1).

MSAL for Python is synchronous (it drives `requests`), so it would need a
thread per call and still hide the HTTP exchange from our timeouts and
metrics. The grant itself is one form POST, so it is spoken here directly on
the daemon's httpx client. Tokens are cached per scope and refreshed ahead of
expiry; one lock per scope keeps a burst of enrollments from fetching the
same token many times at once, and while one caller refreshes, the others use
the still-valid old token instead of queueing behind the refresh.

A client certificate may stand in for the secret: the JWT assertion (PS256 by
default, RS256 by setting; contract §1.1) is signed by a `Signer`, so its
private key can stay on the PKCS#11 token like the CA's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepd.intune.errors import IntuneAuthError, IntuneError, IntuneTransportError, transport_reason
from scepd.intune.retry import RetryPolicy
from scepd.keys.base import HashName, Signer, UnsupportedParameters
from scepd.locks import KeyedLock
from scepd.logs import event

log = logging.getLogger("scepd.intune")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds, as EJBCA's certificate authenticator uses (§1.1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Credential(Protocol):
    """What proves the app's identity in the token request."""

    async def form(self, client_id: str, token_url: str) -> dict[str, str]: ...


class ClientSecret:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the Intune client secret is empty")
        self._secret = secret

    async def form(self, client_id: str, token_url: str) -> dict[str, str]:
        return {"client_secret": self._secret}

    def __repr__(self) -> str:
        return "ClientSecret(<secret>)"


@runtime_checkable
class PssSigner(Signer, Protocol):
    """A key backend that can also sign RSASSA-PSS (MGF1 with the same hash, salt = digest length)."""

    async def sign_pss(self, data: bytes, hash: HashName) -> bytes: ...


ASSERTION_ALGORITHMS = ("PS256", "RS256")


class ClientCertificate:
    """A JWT client assertion signed with the certificate's key.

    PS256 with an `x5t#S256` header (SHA-256 thumbprint) is what Entra recommends
    now; RS256 with the SHA-1 `x5t` stays available for older setups and for key
    backends that cannot sign PSS."""

    def __init__(
        self,
        certificate: x509.Certificate,
        signer: Signer,
        clock: Callable[[], float] = time.time,
        *,
        algorithm: str = "PS256",
    ) -> None:
        if algorithm not in ASSERTION_ALGORITHMS:
            raise ValueError(f"client assertion algorithm must be one of {', '.join(ASSERTION_ALGORITHMS)}")
        if algorithm == "PS256" and not isinstance(signer, PssSigner):
            raise ValueError("PS256 needs a key backend that signs RSA-PSS")
        self.certificate = certificate
        self.signer = signer
        self.clock = clock
        self.algorithm = algorithm

    def header(self) -> dict[str, object]:
        der = self.certificate.public_bytes(Encoding.DER)
        header: dict[str, object] = {"alg": self.algorithm, "typ": "JWT"}
        if self.algorithm == "PS256":
            header["x5t#S256"] = b64url(hashlib.sha256(der).digest())
        else:
            header["x5t"] = b64url(hashlib.sha1(der).digest())
        header["x5c"] = [base64.b64encode(der).decode("ascii")]
        return header

    async def form(self, client_id: str, token_url: str) -> dict[str, str]:
        if self.algorithm == "PS256":
            try:
                return await self._form(client_id, token_url)
            except UnsupportedParameters as e:
                # A token without RSA-PSS (or an EC key): say so once, and keep authenticating.
                event(log, logging.WARNING, "intune_assertion_fallback", algorithm="RS256", reason=str(e)[:200])
                self.algorithm = "RS256"
        return await self._form(client_id, token_url)

    async def _form(self, client_id: str, token_url: str) -> dict[str, str]:
        now = int(self.clock())
        claims = {
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        signing_input = (
            b64url(json.dumps(self.header(), separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        data = signing_input.encode("ascii")
        if self.algorithm == "PS256":
            assert isinstance(self.signer, PssSigner)
            signature = await self.signer.sign_pss(data, HashName.SHA256)
        else:
            signature = await self.signer.sign(data, HashName.SHA256)
        return {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": signing_input + "." + b64url(signature),
        }


@dataclass
class _Cached:
    token: str
    refresh_at: float  # monotonic time after which a new token is fetched
    expires_at: float


def _note(level: int, request_id: str, attempt: int, result: str, **detail: Any) -> None:
    """One `intune_call` event for a token request: its client-request-id is what Microsoft asks for."""
    event(
        log,
        level,
        "intune_call",
        action="token",
        client_request_id=request_id,
        attempt=attempt + 1,
        result=result,
        **detail,
    )


class TokenSource:
    """Bearer tokens by scope, cached until shortly before they expire."""

    REFRESH_MARGIN = 300.0  # refresh 5 minutes early, as PIMP does (§1.3)

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        authority: str,
        tenant: str,
        client_id: str,
        credential: Credential,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.http = http
        self.token_url = f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"
        self.client_id = client_id
        self.credential = credential
        self.timeout = timeout
        self.retry = retry
        self.clock = clock
        self.observe = observe
        self._cache: dict[str, _Cached] = {}
        self._locks = KeyedLock[str]()

    async def token(self, scope: str) -> str:
        """The cached token; past its refresh time one caller fetches a new one while the
        others go on with the old one as long as it is valid, so a slow or failing Entra
        stalls no enrollment until the token really expires."""
        cached = self._cache.get(scope)
        if cached is not None and self.clock() < cached.refresh_at:
            return cached.token
        if cached is not None and self.clock() < cached.expires_at and self._locks.locked(scope):
            return cached.token  # being refreshed
        async with self._locks.hold(scope):
            cached = self._cache.get(scope)
            if cached is not None and self.clock() < cached.refresh_at:
                return cached.token
            try:
                fresh = await self._fetch(scope)
            except IntuneError as e:
                if cached is not None and self.clock() < cached.expires_at:
                    event(log, logging.WARNING, "intune_token_refresh_failed", error=e.code, using="cached")
                    return cached.token
                raise
            self._cache[scope] = fresh
            return fresh.token

    def invalidate(self, scope: str, token: str) -> None:
        """Drop `token` after a 401, unless another task already replaced it."""
        cached = self._cache.get(scope)
        if cached is not None and cached.token == token:
            del self._cache[scope]

    async def _fetch(self, scope: str) -> _Cached:
        started = self.clock()
        result = "error"
        try:
            for attempt in range(self.retry.retries + 1):
                if attempt:
                    await trio.sleep(self.retry.pause(attempt))
                # A fresh assertion each try: it carries its own jti and a 60 s life.
                form = {"grant_type": "client_credentials", "client_id": self.client_id, "scope": scope}
                form.update(await self.credential.form(self.client_id, self.token_url))
                request_id = str(uuid.uuid4())  # Entra takes MSAL's correlation header too
                headers = {"client-request-id": request_id, "return-client-request-id": "true"}
                try:
                    response = await self.http.post(self.token_url, data=form, headers=headers, timeout=self.timeout)
                except httpx.TransportError as e:
                    result = "transport"
                    failure: IntuneError = IntuneTransportError(
                        "token", f"token endpoint unreachable: {transport_reason(e)}"
                    )
                    failure.request_id = request_id
                    _note(logging.WARNING, request_id, attempt, result, error=transport_reason(e))
                    continue
                if self.retry.retryable(response.status_code):
                    result = f"http_{response.status_code}"
                    failure = IntuneAuthError(f"token endpoint answered HTTP {response.status_code}")
                    failure.request_id = request_id
                    self._log_refusal(response, request_id, attempt, result)
                    continue
                try:
                    cached, result = self._parse(response)
                except IntuneError as e:
                    e.request_id = request_id
                    self._log_refusal(response, request_id, attempt, f"http_{response.status_code}")
                    raise
                if log.isEnabledFor(logging.DEBUG):
                    _note(logging.DEBUG, request_id, attempt, "ok", status=200)
                return cached
            raise failure
        finally:
            if self.observe is not None:
                self.observe("token", result, self.clock() - started)

    @staticmethod
    def _log_refusal(response: httpx.Response, request_id: str, attempt: int, result: str) -> None:
        """Entra's `error` and `error_description` (AADSTS code and text; no secret in them)."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        _note(
            logging.WARNING,
            request_id,
            attempt,
            result,
            code=str(body.get("error", ""))[:80] or None,
            # A refusal that is not Entra's JSON (a proxy's HTML page, say) has no description at all.
            error_description=(str(body.get("error_description", "")).splitlines() or [""])[0][:300] or None,
        )

    def _parse(self, response: httpx.Response) -> tuple[_Cached, str]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise IntuneAuthError(f"token request refused: HTTP {response.status_code} {error}".strip())
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int) or lifetime <= 0:
            raise IntuneAuthError("token response lacks access_token or expires_in")
        now = self.clock()
        # A short-lived token is refreshed at half its life rather than never used.
        margin = min(self.REFRESH_MARGIN, lifetime / 2)
        event(log, logging.INFO, "intune_token", expires_in=lifetime)
        return _Cached(token, now + lifetime - margin, now + lifetime), "success"
