"""/readyz: the same verdict on both listeners, the reasons only on the operator's (issue 13 point 4).
The daemon-level check is in tests/e2e/test_store_faults.py (root only); this one runs anywhere."""

from __future__ import annotations

from quart_trio import QuartTrio

from scepd.health import PUBLIC_FAILURE, Readiness
from scepd.http.health_routes import add_health_routes

SECRET_PATH = "/var/lib/scepd/private/scepd.sqlite3"


async def _ok() -> None:
    pass


async def _broken() -> None:
    raise OSError(f"[Errno 13] Permission denied: '{SECRET_PATH}'")


async def test_public_readyz_has_the_verdict_but_not_the_exception_text() -> None:
    readiness = Readiness.build(token=_ok, store=_broken)
    bodies = {}
    for detailed in (True, False):
        app = QuartTrio(f"health-{detailed}")
        add_health_routes(app, readiness, detailed=detailed)
        response = await app.test_client().get("/readyz")
        assert response.status_code == 503
        bodies[detailed] = await response.get_json()
    assert SECRET_PATH in bodies[True]["checks"]["store"]["reason"]
    assert bodies[False]["checks"]["store"] == {"ok": False, "reason": PUBLIC_FAILURE}
    assert bodies[False]["checks"]["token"] == bodies[True]["checks"]["token"] == {"ok": True, "reason": "ok"}
    assert bodies[False]["status"] == bodies[True]["status"] == "not ready"
