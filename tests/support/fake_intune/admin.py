"""The admin API under /_fake/: the Python API over JSON, for the command line and
for tests that drive a fake running in another process. Not recorded, not faulted,
no authentication (loopback only).

    GET    /_fake/info                    URLs, tenant, client id, config snippet
    POST   /_fake/challenges              {subject, sans?, ttl?, targeted?, keySize?, forceCode?, size?}
                                          -> {challenge, expiresAt}
    GET    /_fake/challenges              every minted challenge and its state
    POST   /_fake/challenges/targeting    {challenge, targeted}
    POST   /_fake/revocations             {serialNumber, issuerName?, caConfiguration?, requestContext?, omitNulls?}
                                          or {transactionId} -> {requestContext}
    GET    /_fake/revocations             the queue (items not yet settled by an upload)
    POST   /_fake/revocations/filter      {mode: "match"|"ignore"} how downloads apply issuerName
    GET    /_fake/revocation-results      uploaded results by requestContext
    GET    /_fake/calls[?route=R]         recorded calls
    GET    /_fake/notifications[?kind=K]  notifications by transactionId
    GET    /_fake/faults                  pending faults by route
    POST   /_fake/faults                  {route, status?, times?, body?, rawBody?, retryAfter?, headers?,
                                           delay?, drop?: "reset"|"close", afterProcessing?}
    DELETE /_fake/faults[?route=R]        clear faults
    POST   /_fake/discovery               {omit?, duplicate?, duplicateUri?, duplicateFirst?, entries?}
    POST   /_fake/tokens                  {expiresIn?, graphRoles?, intuneRoles?, expireAll?}
    POST   /_fake/clock                   {advance: seconds}
    POST   /_fake/reset
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.support.fake_intune.model import Fault, Json, Reply, Request
from tests.support.fake_intune.state import FakeIntune


class AdminError(Exception):
    pass


def _body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError as e:
        raise AdminError(f"body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise AdminError("body must be a JSON object")
    return body


def _query(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


def _info(fake: FakeIntune, request: Request) -> Json:
    return {
        "baseUrl": fake.base_url,
        "authority": fake.authority,
        "graphUrl": fake.graph_url,
        "intuneResourceUrl": fake.intune_resource_url,
        "tokenUrl": fake.token_url,
        "scepServiceUrl": fake.scep_service_url,
        "pkiServiceUrl": fake.pki_service_url,
        "tenant": fake.tenant,
        "tenantId": fake.tenant_id,
        "clientId": fake.client_id,
        "configSnippet": fake.config_snippet(),
    }


def _mint(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    if "subject" not in body:
        raise AdminError("subject is required (an RFC 4514 string, or null to skip the check)")
    try:
        value = fake.mint_challenge(
            body["subject"],
            body.get("sans", ()),
            float(body.get("ttl", 3600)),
            targeted=bool(body.get("targeted", True)),
            key_size=body.get("keySize"),
            force_code=body.get("forceCode"),
            **({"size": int(body["size"])} if "size" in body else {}),
        )
    except ValueError as e:
        raise AdminError(str(e)) from e
    return {"challenge": value, "expiresAt": fake.challenge(value).expires_at}  # not a scan: benches mint thousands


def _targeting(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    try:
        fake.set_targeted(body["challenge"], bool(body["targeted"]))
    except KeyError as e:
        raise AdminError(f"unknown challenge or missing field: {e}") from e
    return {"ok": True}


def _revoke(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    if "transactionId" in body:
        try:
            return {"requestContext": fake.revoke_notified(body["transactionId"])}
        except KeyError as e:
            raise AdminError(str(e)) from e
    if not isinstance(body.get("serialNumber"), str):
        raise AdminError("serialNumber (string) or transactionId is required")
    context = fake.queue_revocation(
        body["serialNumber"],
        body.get("issuerName"),
        body.get("caConfiguration"),
        request_context=body.get("requestContext"),
        omit_nulls=bool(body.get("omitNulls", False)),
    )
    return {"requestContext": context}


def _issuer_filter(fake: FakeIntune, request: Request) -> Json:
    fake.set_issuer_filter(str(_body(request).get("mode")))
    return {"ok": True}


def _add_fault(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    headers = [tuple(h) for h in body.get("headers", [])]
    if body.get("retryAfter") is not None:
        headers.append(("retry-after", str(body["retryAfter"])))
    elif body.get("status") == 429:
        headers.append(("retry-after", "1"))
    raw = body.get("rawBody")
    try:
        fault = fake.add_fault(
            Fault(
                route=str(body.get("route")),
                times=body.get("times", 1),
                status=body.get("status"),
                body=raw.encode() if isinstance(raw, str) else body.get("body"),
                headers=tuple((str(k), str(v)) for k, v in headers),
                delay=float(body.get("delay", 0)),
                drop=body.get("drop"),
                process=bool(body.get("afterProcessing", False)),
            )
        )
    except ValueError as e:
        raise AdminError(str(e)) from e
    return {**fault.to_json(), "body": None if isinstance(fault.body, bytes) else fault.body}


def _faults(fake: FakeIntune, request: Request) -> Json:
    with fake.lock:
        return {
            route: [{**f.to_json(), "body": None if isinstance(f.body, bytes) else f.body} for f in faults]
            for route, faults in fake.state.faults.items()
        }


def _clear_faults(fake: FakeIntune, request: Request) -> Json:
    fake.clear_faults(_query(request, "route"))
    return {"ok": True}


def _discovery(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    fake.set_discovery(
        omit=body.get("omit", ()),
        duplicate=body.get("duplicate", ()),
        duplicate_uri=body.get("duplicateUri"),
        duplicate_first=bool(body.get("duplicateFirst", False)),
        entries=body.get("entries"),
    )
    return {"ok": True}


def _tokens(fake: FakeIntune, request: Request) -> Json:
    body = _body(request)
    if "expiresIn" in body:
        fake.set_token_lifetime(int(body["expiresIn"]))
    fake.set_roles(graph=body.get("graphRoles"), intune=body.get("intuneRoles"))
    if body.get("expireAll"):
        fake.expire_tokens()
    return {"ok": True}


def _clock(fake: FakeIntune, request: Request) -> Json:
    fake.advance_clock(float(_body(request).get("advance", 0)))
    return {"now": fake.now()}


def _reset(fake: FakeIntune, request: Request) -> Json:
    fake.reset()
    return {"ok": True}


ROUTES: dict[tuple[str, str], Callable[[FakeIntune, Request], Json]] = {
    ("GET", "/_fake/info"): _info,
    ("POST", "/_fake/challenges"): _mint,
    ("GET", "/_fake/challenges"): lambda fake, req: [c.to_json(fake.now()) for c in fake.challenges()],
    ("POST", "/_fake/challenges/targeting"): _targeting,
    ("POST", "/_fake/revocations"): _revoke,
    ("POST", "/_fake/revocations/filter"): _issuer_filter,
    ("GET", "/_fake/revocations"): lambda fake, req: [i.to_json() for i in fake.pending_revocations()],
    ("GET", "/_fake/revocation-results"): lambda fake, req: {
        k: [r.to_json() for r in v] for k, v in fake.revocation_results().items()
    },
    ("GET", "/_fake/calls"): lambda fake, req: [c.to_json() for c in fake.calls(_query(req, "route"))],
    ("GET", "/_fake/notifications"): lambda fake, req: {
        k: [n.to_json() for n in v]
        for k, v in fake.notifications(_query(req, "kind")).items()  # type: ignore[arg-type]
    },
    ("GET", "/_fake/faults"): _faults,
    ("POST", "/_fake/faults"): _add_fault,
    ("DELETE", "/_fake/faults"): _clear_faults,
    ("POST", "/_fake/discovery"): _discovery,
    ("POST", "/_fake/tokens"): _tokens,
    ("POST", "/_fake/clock"): _clock,
    ("POST", "/_fake/reset"): _reset,
}


def handle(fake: FakeIntune, request: Request) -> Reply:
    handler = ROUTES.get((request.method, request.path.rstrip("/")))
    if handler is None:
        return Reply(404, {"error": f"no admin route {request.method} {request.path}"})
    try:
        return Reply(200, handler(fake, request))
    except (AdminError, KeyError, TypeError, ValueError) as e:
        return Reply(400, {"error": str(e)})
