"""/healthz and /readyz on the SCEP listener and the metrics listener.

Both answer the same status codes; only the metrics listener (the operator's,
loopback by default) says why a check fails.
"""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from scepd.health import Readiness


def add_health_routes(app: QuartTrio, readiness: Readiness | None, *, detailed: bool) -> None:
    @app.route("/healthz")
    async def healthz() -> Response:
        return Response('{"status": "alive"}\n', content_type="application/json")

    @app.route("/readyz")
    async def readyz() -> Response:
        if readiness is None:
            return Response('{"status": "ready", "checks": {}}\n', content_type="application/json")
        status, body = await readiness.report(detailed=detailed)
        return Response(body, status=status, content_type="application/json")
