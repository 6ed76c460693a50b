"""Microsoft Graph service discovery for the Intune principal (§2).

Both request forms of §2.1 are served: the direct
`servicePrincipals/appId=.../endpoints`, and PIMP's two-step `$filter`
lookup followed by `servicePrincipals/{objectId}/endpoints`.
"""

from __future__ import annotations

import re
import uuid

from tests.support.fake_intune import wire
from tests.support.fake_intune.entra import bearer
from tests.support.fake_intune.errors import GRAPH_CONTENT_TYPE, graph_error
from tests.support.fake_intune.model import Json, Reply, Request
from tests.support.fake_intune.state import FakeIntune

ENDPOINTS_BY_APP_ID = re.compile(r"^/v1\.0/servicePrincipals/appId=([^/]+)/endpoints$")
ENDPOINTS_BY_ID = re.compile(r"^/v1\.0/servicePrincipals/([0-9a-fA-F-]{36})/endpoints$")
PRINCIPALS = "/v1.0/servicePrincipals"
FILTER = re.compile(r"^\s*appId\s+eq\s+'([^']*)'\s*$")


def _endpoint(provider: str, uri: str) -> dict[str, Json]:
    """A Graph `endpoint` resource; clients read only providerName and uri (§2.1)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, provider + uri)),
        "deletedDateTime": None,
        "capability": "Intune",
        "providerId": None,
        "providerName": provider,
        "providerResourceId": None,
        "uri": uri,
    }


def endpoint_list(fake: FakeIntune) -> list[dict[str, Json]]:
    """The list as currently bent by `FakeIntune.set_discovery`."""
    with fake.lock:
        settings = fake.state.discovery
    if settings.entries is not None:
        return [dict(e) for e in settings.entries]
    entries = []
    for provider, uri in ((wire.SCEP_PROVIDER, fake.scep_service_url), (wire.PKI_PROVIDER, fake.pki_service_url)):
        if provider in settings.omit:
            continue
        good = _endpoint(provider, uri)
        if provider in settings.duplicate:
            stale = _endpoint(provider, settings.duplicate_uri or f"{fake.base_url}/RACerts/Stale{provider}/Gateway")
            entries.extend([stale, good] if settings.duplicate_first else [good, stale])
        else:
            entries.append(good)
    return entries


def _authorise(fake: FakeIntune, request: Request) -> Reply | None:
    client_request_id = request.header("client-request-id")
    token, why = bearer(fake, request)
    if token is None:
        return graph_error(401, "InvalidAuthenticationToken", why, client_request_id)
    if token.audience != "graph":
        return graph_error(
            401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", client_request_id
        )
    if wire.GRAPH_ROLE not in token.roles:
        return graph_error(
            403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.", client_request_id
        )
    return None


def _ok(request: Request, body: dict[str, Json]) -> Reply:
    request_id = str(uuid.uuid4())
    headers = [("request-id", request_id), ("client-request-id", request.header("client-request-id") or request_id)]
    return Reply(200, body, headers=headers, content_type=GRAPH_CONTENT_TYPE)


def _not_found(request: Request, what: str) -> Reply:
    return graph_error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{what}' does not exist or one of its queried reference-property objects are not present.",
        request.header("client-request-id"),
    )


def is_graph_path(path: str) -> bool:
    return path == PRINCIPALS or bool(ENDPOINTS_BY_APP_ID.match(path) or ENDPOINTS_BY_ID.match(path))


def discovery(fake: FakeIntune, request: Request) -> Reply:
    """GET one of the discovery forms; `is_graph_path(request.path)` holds."""
    refused = _authorise(fake, request)
    if refused is not None:
        return refused
    if request.path == PRINCIPALS:
        clause = (request.query.get("$filter") or [""])[0]
        match = FILTER.match(clause)
        if match is None:
            return graph_error(
                400, "BadRequest", f"Invalid filter clause: {clause!r}", request.header("client-request-id")
            )
        principals = []
        if match.group(1).lower() == wire.INTUNE_APP_ID:
            principals.append(
                {"id": wire.INTUNE_SP_OBJECT_ID, "appId": wire.INTUNE_APP_ID, "displayName": "Microsoft Intune"}
            )
        return _ok(
            request,
            {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals", "value": principals},
        )
    by_app_id = ENDPOINTS_BY_APP_ID.match(request.path)
    if by_app_id is not None and by_app_id.group(1).lower() != wire.INTUNE_APP_ID:
        return _not_found(request, f"appId={by_app_id.group(1)}")
    by_id = ENDPOINTS_BY_ID.match(request.path)
    if by_id is not None and by_id.group(1).lower() != wire.INTUNE_SP_OBJECT_ID:
        return _not_found(request, by_id.group(1))
    context = f"https://graph.microsoft.com/v1.0/$metadata#servicePrincipals('appId%3D{wire.INTUNE_APP_ID}')/endpoints"
    return _ok(request, {"@odata.context": context, "value": endpoint_list(fake)})
