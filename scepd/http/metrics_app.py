"""The operator's listener: Prometheus exposition, liveness and readiness.

It is a separate app on its own (loopback by default) listener, so the
metrics never share a port with what devices reach, and a scrape never
queues behind enrollments. Store-derived gauges are refreshed when scraped,
from the same async store the daemon uses (a custom collector would have to
block the event loop for it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from scepd import metrics
from scepd.episodes import Episode, fault_kind
from scepd.health import Readiness
from scepd.http.health_routes import add_health_routes

log = logging.getLogger("scepd.metrics")

Refresh = Callable[[], Awaitable[None]]


def create_metrics_app(readiness: Readiness | None, refresh: Refresh | None = None) -> QuartTrio:
    app = QuartTrio("scepd-metrics")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    # A store fault fails every scrape's refresh: log it once per episode, count each.
    episode = Episode(log, "background_fault", loop="metrics_refresh")

    def failed(kind: str, cause: str) -> None:
        metrics.BACKGROUND_FAILURES.labels("metrics_refresh", kind).inc()
        episode.failed(kind, cause)

    @app.route("/metrics")
    async def exposition() -> Response:
        # Bounded, so a stuck dependency shows up as stale gauges, not a scrape timeout.
        refreshed = refresh is None
        with trio.move_on_after(3):
            if refresh is not None:
                try:
                    await refresh()
                except Exception as e:  # noqa: BLE001 - stale gauges, never a failed scrape
                    failed(fault_kind(e), f"{type(e).__name__}: {e}"[:300])
                else:
                    episode.succeeded()
                refreshed = True
            if readiness is not None:
                await readiness.run()  # keeps scepd_ready{check} current
        if not refreshed:
            failed("timeout", "the store-derived gauges were not refreshed within 3 s")
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    add_health_routes(app, readiness, detailed=True)
    return app
