"""Routing, fault injection and recording: a request in, a `Reply` out, no sockets.

The server module only moves bytes; everything a test can observe about a
call is decided here, so it can be read (and reasoned about) in one place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from tests.support.fake_intune import admin, entra, graph, intune, wire
from tests.support.fake_intune.errors import default_fault_body, intune_error
from tests.support.fake_intune.model import Call, Fault, Reply, Request
from tests.support.fake_intune.state import FakeIntune

TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
Handler = Callable[[FakeIntune, Request], Reply]


def route_of(request: Request) -> tuple[str, str, Handler] | None:
    """(route name, the method it takes, handler) for an emulated path, else None."""
    match = TOKEN_PATH.match(request.path)
    if match is not None:
        tenant = match.group(1)
        return wire.TOKEN, "POST", lambda fake, req: entra.token(fake, req, tenant)
    if graph.is_graph_path(request.path):
        return wire.DISCOVERY, "GET", graph.discovery
    for base, actions, handler in (
        (wire.SCEP_PATH, wire.SCEP_ACTIONS, intune.scep_action),
        (wire.PKI_PATH, wire.PKI_ACTIONS, intune.pki_action),
    ):
        if request.path.startswith(base + "/"):
            route = actions.get(request.path[len(base) + 1 :])
            if route is not None:
                return route, "POST", lambda fake, req, h=handler, r=route: h(fake, req, r)
    return None


def _fault_reply(route: str, fault: Fault) -> Reply:
    assert fault.status is not None
    if fault.body is None:
        reply = default_fault_body(route, fault.status)
    elif isinstance(fault.body, bytes):
        reply = Reply(fault.status, raw=fault.body)
    else:
        reply = Reply(fault.status, fault.body)
    reply.headers.extend(fault.headers)
    return reply


def handle(fake: FakeIntune, request: Request) -> Reply:
    """Answer one request, applying the route's next fault and recording the call."""
    if request.path == "/_fake" or request.path.startswith("/_fake/"):
        return admin.handle(fake, request)
    found = route_of(request)
    route = found[0] if found else "unknown"
    fault = fake.take_fault(route) if found else None
    outcome = "answered"
    if fault is not None and fault.drop and not fault.process:
        reply = Reply(0, drop=fault.drop)
    elif fault is not None and fault.status is not None:
        reply, outcome = _fault_reply(route, fault), "fault"
    elif found is None:
        reply = intune_error(404, f"No route for {request.method} {request.path}.")
    elif request.method != found[1]:
        reply = intune_error(405, f"{request.method} is not allowed here; use {found[1]}.")
        reply.headers.append(("allow", found[1]))
    else:
        reply = found[2](fake, request)
    if fault is not None:
        reply.delay = fault.delay
        reply.drop = fault.drop
    if reply.drop:
        outcome = "dropped"
    fake.record(
        Call(
            route=route,
            request=request,
            status=None if reply.drop else reply.status,
            outcome=outcome,
            time=time.time(),
            fault=fault.describe() if fault else None,
        )
    )
    return reply
