"""Plain records the fake keeps and hands to tests: requests, replies, calls,
challenges, notifications, revocation work and faults.

They are immutable where a test reads them, so a snapshot taken from another
thread cannot change under the reader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from cryptography import x509

Json = Any  # a parsed JSON value

DropHow = Literal["reset", "close"]

# json.dumps(..., separators=...) builds an encoder per call; the fake encodes every answer.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class Request:
    """One HTTP request as the server read it; header names are lower-case."""

    method: str
    target: str  # path and query, as sent
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @cached_property
    def query(self) -> dict[str, list[str]]:
        """The query string's values by name, parsed when first asked (only Graph's $filter lookup has one)."""
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class Reply:
    """What to do with the request: answer (maybe late), or drop the connection."""

    status: int
    body: Json = None  # serialised as JSON; every answer is JSON (§3)
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: DropHow | None = None  # drop the connection instead of answering
    content_type: str = "application/json; charset=utf-8"
    raw: bytes | None = None  # send these bytes instead of JSON (a fault's deliberately broken body)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return _COMPACT.encode(self.body).encode("utf-8")


@dataclass(frozen=True)
class Call:
    """One request to an emulated route, with what the fake did about it.

    The request is kept as it was read; `query`, `headers` and `body` are worked out from it
    when a test first reads them. Recording thousands of calls then costs the server next to
    nothing, which matters when it shares the CPU with the daemon it serves (bench/intune_load.py).
    """

    route: str  # token, discovery, validate, ... or "unknown"
    request: Request = field(repr=False)
    status: int | None  # None when the connection was dropped
    outcome: str  # "answered", "fault", "dropped"
    time: float  # wall clock (time.time()) when the request was handled
    fault: str | None = None  # description of the injected fault, if any

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def query(self) -> dict[str, list[str]]:
        return self.request.query

    @cached_property
    def headers(self) -> dict[str, str]:
        """Lower-case names; repeated headers joined with ", "."""
        out: dict[str, str] = {}
        for name, value in self.request.headers:
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    @cached_property
    def body(self) -> Json:
        """Parsed JSON, the form as a dict, the raw text when neither parses, hex when not UTF-8, None when empty."""
        raw = self.request.body
        if not raw:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
        if "x-www-form-urlencoded" in (self.request.header("content-type") or "").lower():
            return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text, keep_blank_values=True).items()}
        try:
            return json.loads(text)
        except ValueError:
            return text

    def to_json(self) -> dict[str, Json]:
        return {
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
            "outcome": self.outcome,
            "time": self.time,
            "fault": self.fault,
        }


@dataclass
class Challenge:
    """A challenge the fake minted: what Intune encrypted into the real blob (§7)."""

    value: str
    subject: str | None  # RFC 4514; None: not checked
    sans: tuple[str, ...] | None  # "dns:x", "email:x", "uri:x", "ip:x", "upn:x"; None: not checked
    expires_at: float
    targeted: bool = True
    key_size: int | None = None  # RSA modulus bits the profile asks for; None: not checked
    force_code: str | None = None  # answer this code instead of checking (any string)
    used_by: tuple[str, bytes] | None = None  # (transactionId, CSR DER) of the first Success
    validations: int = 0
    # `subject` as a name, parsed once when minted rather than on every validation.
    subject_name: x509.Name | None = field(default=None, repr=False, compare=False)

    def to_json(self, now: float) -> dict[str, Json]:
        return {
            "challenge": self.value,
            "subject": self.subject,
            "sans": list(self.sans) if self.sans is not None else None,
            "expiresAt": self.expires_at,
            "expired": now >= self.expires_at,
            "targeted": self.targeted,
            "keySize": self.key_size,
            "forceCode": self.force_code,
            "usedByTransaction": self.used_by[0] if self.used_by else None,
            "validations": self.validations,
        }


@dataclass(frozen=True)
class Notification:
    """A success or failure notification, kept by transactionId."""

    kind: Literal["success", "failure"]
    transaction_id: str
    body: dict[str, Json]  # the `notification` object as sent
    challenge_known: bool  # the CSR carried a challenge this fake minted
    validated: bool  # ... and that challenge passed validateRequest
    time: float

    def to_json(self) -> dict[str, Json]:
        return asdict(self)


@dataclass
class RevocationItem:
    """A queued caRevocationRequest (§6.1)."""

    request_context: str
    serial_number: str
    issuer_name: str | None
    ca_configuration: str | None
    omit_nulls: bool = False  # emit absent keys instead of JSON null
    deliveries: int = 0

    def wire(self) -> dict[str, Json]:
        item: dict[str, Json] = {"requestContext": self.request_context, "serialNumber": self.serial_number}
        for key, value in (("issuerName", self.issuer_name), ("caConfiguration", self.ca_configuration)):
            if value is not None or not self.omit_nulls:
                item[key] = value
        return item

    def to_json(self) -> dict[str, Json]:
        return {**self.wire(), "deliveries": self.deliveries}


@dataclass(frozen=True)
class RevocationResult:
    """One uploaded result, normalised; `error_code` is the C# enum name."""

    request_context: str
    succeeded: bool
    error_code: str
    error_code_sent: Json  # exactly as the client sent it ("4004" or "CertificateNotFoundError")
    error_message: str | None
    known: bool  # the requestContext was queued by this fake
    acknowledged: bool  # the item left the queue because of this result
    time: float

    def to_json(self) -> dict[str, Json]:
        return asdict(self)


@dataclass
class Fault:
    """An injected misbehaviour for one route, used `times` times (None: until cleared)."""

    route: str
    times: int | None = 1
    status: int | None = None  # None: answer normally
    body: Json = None  # None: the route's realistic error body for `status`
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds before the answer (after processing)
    drop: DropHow | None = None  # drop without answering
    process: bool = False  # with drop: handle the request first, then lose the answer

    def describe(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.delay:
            parts.append(f"delay={self.delay:g}")
        if self.drop:
            parts.append(f"drop={self.drop}{'-after-processing' if self.process else ''}")
        return " ".join(parts) or "none"

    def to_json(self) -> dict[str, Json]:
        return {**asdict(self), "headers": [list(h) for h in self.headers]}
