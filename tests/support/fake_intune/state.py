"""`FakeIntune`: everything the fake knows, and the Python API tests drive it by.

The HTTP server runs in another thread (and the admin API in another
process, through it), so every read and write goes through one lock and every
read hands back copies. Handlers in the sibling modules take the same lock
and work on `FakeIntune.state` directly.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.fake_intune import csr as csrmod
from tests.support.fake_intune import wire
from tests.support.fake_intune.model import (
    Call,
    Challenge,
    DropHow,
    Fault,
    Json,
    Notification,
    RevocationItem,
    RevocationResult,
)

Audience = Literal["graph", "intune"]
DEFAULT_TOKEN_LIFETIME = 3599
DEFAULT_CHALLENGE_BYTES = 2400  # 3200 base64url characters: "multi-kB" like the real blob (§7, size [U])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class IssuedToken:
    value: str
    audience: Audience
    roles: tuple[str, ...]
    expires_at: float  # on the fake's clock


@dataclass
class Discovery:
    """How the Graph endpoint list is bent: omitted or duplicated providers, or a verbatim list."""

    omit: tuple[str, ...] = ()
    duplicate: tuple[str, ...] = ()
    duplicate_uri: str | None = None  # default: a path on the fake that answers 404
    duplicate_first: bool = False  # the stale duplicate before the good entry (C# keeps the last, Java the first)
    entries: list[dict[str, Json]] | None = None  # replaces the generated list


@dataclass
class State:
    """The mutable part; guarded by `FakeIntune.lock`."""

    challenges: dict[str, Challenge] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    roles: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"graph": (wire.GRAPH_ROLE,), "intune": (wire.INTUNE_ROLE,)}
    )
    discovery: Discovery = field(default_factory=Discovery)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    notifications: dict[str, list[Notification]] = field(default_factory=dict)
    revocations: dict[str, RevocationItem] = field(default_factory=dict)  # requestContext -> item, in queue order
    results: dict[str, list[RevocationResult]] = field(default_factory=dict)
    validated: set[str] = field(default_factory=set)  # transactionIds a validateRequest answered Success
    issuer_filter: str = "match"  # "ignore": downloads hand out every queued item, whatever issuerName asks
    clock_offset: float = 0.0


class FakeIntune:
    """Entra, Graph and Intune as one loopback service, for tests and the demo.

    Construct it, then serve it with `running_fake_intune` (a thread) or
    `serve_fake_intune` (your own trio nursery); `base_url` is set once it
    listens.
    """

    def __init__(
        self,
        *,
        tenant: str = "contoso.onmicrosoft.com",
        tenant_id: str | None = None,
        client_id: str = "11111111-2222-3333-4444-555555555555",
        client_secret: str | None = "fake-client-secret",
        client_certificates: Iterable[x509.Certificate] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.tenant_id = tenant_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant))
        self.client_id = client_id
        self.client_secret = client_secret
        self._certificates: dict[str, x509.Certificate] = {}
        for certificate in client_certificates:
            self.add_client_certificate(certificate)
        self._clock = clock
        self._token_key = secrets.token_bytes(32)
        self.lock = threading.RLock()
        self.state = State()
        self.base_url: str | None = None  # http://127.0.0.1:PORT once served

    # -- where a client should point -------------------------------------------------

    def _base(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the fake is not serving yet")
        return self.base_url

    @property
    def authority(self) -> str:
        """Entra authority: token URL = authority + tenant + /oauth2/v2.0/token."""
        return self._base() + "/"

    @property
    def graph_url(self) -> str:
        """Graph answers on the fake's own host."""
        return self._base() + "/"

    @property
    def intune_resource_url(self) -> str:
        """The real default: only ever used as the scope string (`...//.default`)."""
        return wire.INTUNE_RESOURCE

    @property
    def token_url(self) -> str:
        return f"{self._base()}/{self.tenant}/oauth2/v2.0/token"

    @property
    def scep_service_url(self) -> str:
        return self._base() + wire.SCEP_PATH

    @property
    def pki_service_url(self) -> str:
        return self._base() + wire.PKI_PATH

    def config_snippet(self, client_secret_source: str = "file:/path/to/client-secret") -> str:
        """The scepd `[intune]` table that points a daemon at this fake."""
        return (
            "[intune]\n"
            f'tenant = "{self.tenant}"\n'
            f'client_id = "{self.client_id}"\n'
            f'client_secret = "{client_secret_source}"\n'
            f'authority = "{self.authority}"\n'
            f'graph_url = "{self.graph_url}"\n'
            f'intune_resource_url = "{self.intune_resource_url}"  # the real default: used as the scope only\n'
        )

    # -- time --------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock: wall time plus whatever `advance_clock` added."""
        return self._clock() + self.state.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Let time pass for everything the fake issued (tokens, challenges) without sleeping."""
        with self.lock:
            self.state.clock_offset += seconds

    # -- credentials and tokens --------------------------------------------------------

    def add_client_certificate(self, certificate: x509.Certificate) -> None:
        """Register a certificate credential on the app (what uploading a .cer in Entra does)."""
        self._certificates[b64url(hashlib.sha1(certificate.public_bytes(Encoding.DER)).digest())] = certificate

    def client_certificate(self, x5t: str | None, x5t_s256: str | None) -> x509.Certificate | None:
        if x5t and x5t in self._certificates:
            return self._certificates[x5t]
        if x5t_s256:
            for certificate in self._certificates.values():
                if b64url(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()) == x5t_s256:
                    return certificate
        return None

    def set_token_lifetime(self, seconds: int) -> None:
        """`expires_in` of tokens issued from now on (default 3599)."""
        with self.lock:
            self.state.token_lifetime = int(seconds)

    def set_roles(self, *, graph: Sequence[str] | None = None, intune: Sequence[str] | None = None) -> None:
        """Roles granted in tokens issued from now on; drop `scep_challenge_provider` to get
        Intune's 401 for a missing role (§3)."""
        with self.lock:
            if graph is not None:
                self.state.roles["graph"] = tuple(graph)
            if intune is not None:
                self.state.roles["intune"] = tuple(intune)

    def expire_tokens(self) -> None:
        """Forget every issued token, so the next call with a cached one gets 401."""
        with self.lock:
            self.state.tokens.clear()

    def issue_token(self, audience: Audience) -> IssuedToken:
        """A JWT-shaped token (roles visible, as clients such as PIMP read them) that only this
        fake accepts: it is checked by lookup, never by its signature."""
        with self.lock:
            now = self.now()
            lifetime = self.state.token_lifetime
            roles = self.state.roles[audience]
            claims = {
                "aud": "https://graph.microsoft.com" if audience == "graph" else wire.INTUNE_RESOURCE,
                "iss": f"https://sts.windows.net/{self.tenant_id}/",
                "iat": int(now),
                "nbf": int(now),
                "exp": int(now + lifetime),
                "appid": self.client_id,
                "azp": self.client_id,
                "idtyp": "app",
                "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.client_id)),
                "roles": list(roles),
                "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, self.client_id)),
                "tid": self.tenant_id,
                "uti": b64url(secrets.token_bytes(16)),
                "ver": "1.0",
            }
            header = {"typ": "JWT", "alg": "HS256", "kid": "fake-intune"}
            signing_input = f"{_b64json(header)}.{_b64json(claims)}"
            signature = hmac.new(self._token_key, signing_input.encode(), hashlib.sha256).digest()
            token = IssuedToken(signing_input + "." + b64url(signature), audience, roles, now + lifetime)
            self.state.tokens[token.value] = token
            return token

    # -- challenges --------------------------------------------------------------------

    def mint_challenge(
        self,
        subject: str | None,
        sans: Sequence[str] | None = (),
        ttl: float = 3600.0,
        *,
        targeted: bool = True,
        key_size: int | None = None,
        force_code: str | None = None,
        size: int = DEFAULT_CHALLENGE_BYTES,
    ) -> str:
        """A one-off challenge for a device, as Intune puts in a SCEP profile.

        `subject` is RFC 4514 (`CN=device1,O=Contoso`) and must equal the CSR's
        subject as a name; None skips the check. `sans` are `kind:value` strings
        (see csr.py) that must equal the CSR's SAN set; None skips the check and
        the default () requires no SAN. `force_code` makes validateRequest answer
        that code (any string) whatever the CSR says.
        """
        subject_name = csrmod.parse_subject(subject) if subject is not None else None  # fails here, not later
        normalised = tuple(sorted(csrmod.normalise_san(s) for s in sans)) if sans is not None else None
        value = b64url(secrets.token_bytes(max(size, 32)))
        with self.lock:
            self.state.challenges[value] = Challenge(
                value=value,
                subject=subject,
                sans=normalised,
                expires_at=self.now() + ttl,
                targeted=targeted,
                key_size=key_size,
                force_code=force_code,
                subject_name=subject_name,
            )
        return value

    def set_targeted(self, challenge: str, targeted: bool) -> None:
        """Unassign (False) or reassign the profile the challenge belongs to."""
        with self.lock:
            self.state.challenges[challenge].targeted = targeted

    def challenges(self) -> list[Challenge]:
        with self.lock:
            return [copy.copy(c) for c in self.state.challenges.values()]

    def challenge(self, value: str) -> Challenge:
        """One challenge, by value (KeyError if it was never minted)."""
        with self.lock:
            return copy.copy(self.state.challenges[value])

    # -- revocation --------------------------------------------------------------------

    def queue_revocation(
        self,
        serial_number: str,
        issuer_name: str | None = None,
        ca_configuration: str | None = None,
        *,
        request_context: str | None = None,
        omit_nulls: bool = False,
    ) -> str:
        """Queue a certificate for the CA to revoke (a wipe or retire in Intune); returns its requestContext."""
        context = request_context or _b64json({"RequestId": str(uuid.uuid4()), "TenantId": self.tenant_id})
        with self.lock:
            self.state.revocations[context] = RevocationItem(
                context, serial_number, issuer_name, ca_configuration, omit_nulls
            )
        return context

    def revoke_notified(self, transaction_id: str) -> str:
        """Queue revocation of the certificate a success notification reported, echoing its
        serial, issuer and caConfiguration as Intune presumably does (§5.1, §11)."""
        with self.lock:
            success = [n for n in self.state.notifications.get(transaction_id, ()) if n.kind == "success"]
            if not success:
                raise KeyError(f"no success notification for transaction {transaction_id!r}")
            body = success[-1].body

        def field_(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) else None

        return self.queue_revocation(
            field_("certificateSerialNumber") or "",
            field_("issuingCertificateAuthority"),
            field_("caConfiguration"),
        )

    def set_issuer_filter(self, mode: str) -> None:
        """ "match" (default): a download gets the items whose issuerName matches its filter.
        "ignore": every queued item, as a service that ignores or loosely applies the filter
        would; whether Intune honours the filter exactly is [U] (§6.1)."""
        if mode not in ("match", "ignore"):
            raise ValueError("issuer filter mode is 'match' or 'ignore'")
        with self.lock:
            self.state.issuer_filter = mode

    def pending_revocations(self) -> list[RevocationItem]:
        with self.lock:
            return [copy.copy(item) for item in self.state.revocations.values()]

    def revocation_results(self) -> dict[str, list[RevocationResult]]:
        """Uploaded results by requestContext, in arrival order."""
        with self.lock:
            return {k: list(v) for k, v in self.state.results.items()}

    # -- what happened -----------------------------------------------------------------

    def calls(self, route: str | None = None) -> list[Call]:
        """Every request to an emulated route (not the admin API), oldest first."""
        with self.lock:
            return [c for c in self.state.calls if route is None or c.route == route]

    def notifications(self, kind: Literal["success", "failure"] | None = None) -> dict[str, list[Notification]]:
        """Notifications by transactionId, in arrival order (a retried one appears twice)."""
        with self.lock:
            out: dict[str, list[Notification]] = {}
            for transaction, items in self.state.notifications.items():
                chosen = [n for n in items if kind is None or n.kind == kind]
                if chosen:
                    out[transaction] = chosen
            return out

    def record(self, call: Call) -> None:
        with self.lock:
            self.state.calls.append(call)

    # -- faults ------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        if fault.route not in wire.ROUTES:
            raise ValueError(f"unknown route {fault.route!r}; one of {', '.join(wire.ROUTES)}")
        if fault.drop not in (None, "reset", "close"):
            raise ValueError(f"drop must be 'reset' or 'close', not {fault.drop!r}")
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be at least 1 (or None: until cleared)")
        with self.lock:
            self.state.faults.setdefault(fault.route, []).append(fault)
        return fault

    def fail(
        self,
        route: str,
        status: int = 500,
        *,
        times: int | None = 1,
        body: Json = None,
        retry_after: int | str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Fault:
        """Answer the next `times` calls on `route` with `status` and the service's real error
        body (or `body`: JSON, or bytes sent verbatim). 429 carries Retry-After (default 1)."""
        extra = list(headers)
        if status == 429 and retry_after is None:
            retry_after = 1
        if retry_after is not None:
            extra.append(("retry-after", str(retry_after)))
        return self.add_fault(Fault(route, times, status=status, body=body, headers=tuple(extra)))

    def slow(self, route: str, seconds: float, *, times: int | None = 1, status: int | None = None) -> Fault:
        """Handle the call normally (state changes happen now), but answer `seconds` later."""
        return self.add_fault(Fault(route, times, status=status, delay=seconds))

    def drop(
        self, route: str, *, times: int | None = 1, how: DropHow = "reset", after_processing: bool = False
    ) -> Fault:
        """Drop the connection without answering: a TCP reset (default) or a plain close.
        With `after_processing` the request takes effect first and only the answer is lost."""
        return self.add_fault(Fault(route, times, drop=how, process=after_processing))

    def clear_faults(self, route: str | None = None) -> None:
        with self.lock:
            if route is None:
                self.state.faults.clear()
            else:
                self.state.faults.pop(route, None)

    def take_fault(self, route: str) -> Fault | None:
        """The fault to apply to this call, if any, using up one of its `times`. The fault itself,
        not a copy: only `times` ever changes, and the caller reads everything else."""
        with self.lock:
            queue = self.state.faults.get(route)
            if not queue:
                return None
            fault = queue[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    queue.pop(0)
            return fault

    def set_discovery(
        self,
        *,
        omit: Sequence[str] = (),
        duplicate: Sequence[str] = (),
        duplicate_uri: str | None = None,
        duplicate_first: bool = False,
        entries: list[dict[str, Json]] | None = None,
    ) -> None:
        """Bend the Graph endpoint list: omit providers (IntuneServiceNotFound), list a provider
        twice with a stale URI, or serve `entries` verbatim. No arguments restores the normal list."""
        with self.lock:
            self.state.discovery = Discovery(tuple(omit), tuple(duplicate), duplicate_uri, duplicate_first, entries)

    # -- reset -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget challenges, revocation work, recordings, faults, discovery and clock changes.
        Credentials and already issued tokens stay valid, so a client's cached token still works."""
        with self.lock:
            tokens = self.state.tokens
            self.state = State(tokens=tokens)
