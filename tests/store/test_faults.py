"""Store faults inside the process (issue 14 points 1 and 2): SQLite's own refusals, injected with
per-connection pragmas (query_only: every write is SQLITE_READONLY; max_page_count: the file cannot
grow, SQLITE_FULL), on a real store. The HTTP side is tests/e2e/test_store_faults.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import pytest
import trio

from scepd import metrics
from scepd.enroll.approval import expire_pending_loop, expiry_interval
from scepd.episodes import Backoff
from scepd.http.metrics_app import create_metrics_app
from scepd.store.base import PendingStatus, StoreError
from scepd.store.sqlite import SqliteStore
from tests.store.backend import is_postgres, set_read_only
from tests.store.test_pending import held
from tests.store.test_sqlite import NOW, record


def _count(loop: str, kind: str) -> float:
    return metrics.BACKGROUND_FAILURES.labels(loop, kind)._value.get()  # type: ignore[attr-defined, no-any-return]


def _store_errors(kind: str) -> float:
    return metrics.STORE_ERRORS.labels(kind)._value.get()  # type: ignore[attr-defined, no-any-return]


async def _pragma(store: SqliteStore, pragma: str) -> None:
    await store.database.run(lambda conn: conn.execute(f"PRAGMA {pragma}"))


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"event={event} ")]


async def test_write_faults_have_a_kind_and_one_event_per_episode(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await store.put_issued(record(1))
    readonly = _store_errors("readonly")
    await set_read_only(store, True)
    refusal = "25006" if is_postgres(store) else "SQLITE_READONLY"
    for n in range(2, 6):
        with pytest.raises(StoreError) as failed:
            await store.put_issued(record(n))
        assert failed.value.kind == "readonly" and refusal in str(failed.value)
    with pytest.raises(StoreError):
        await store.ping()  # readiness sees what the writes see
    assert store.fault is not None and store.fault.kind == "readonly"
    assert (await store.get(1)) is not None  # reads still work, and do not end the episode
    assert await store.notified_issuers() == []  # nor does the revocation round's read of the issuers
    assert store.fault is not None
    assert _store_errors("readonly") - readonly == 5
    await set_read_only(store, False)
    await store.ping()
    assert store.fault is None
    assert len(_events(caplog, "store_fault")) == 1
    assert len(_events(caplog, "store_fault_cleared")) == 1
    assert "failures=5" in _events(caplog, "store_fault_cleared")[0]


@pytest.mark.sqlite_only
async def test_a_file_that_cannot_grow_is_full(store: SqliteStore) -> None:
    pages = (await store.database.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()))[0]
    await _pragma(store, f"max_page_count = {pages}")
    big = dataclasses.replace(record(7), der=b"\x30" * 20000)
    with pytest.raises(StoreError) as failed:
        await store.put_issued(big)
    assert failed.value.kind == "full"
    assert await store.get(7) is None


async def test_the_expiry_loop_outlives_a_store_fault_and_resumes(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request, _ = await store.hold_request(held(expires_at=NOW + dt.timedelta(seconds=1)))
    before = _count("pending_expiry", "store:readonly")
    await set_read_only(store, True)
    later = NOW + dt.timedelta(minutes=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: expire_pending_loop(
                store, 0.05, lambda: later, backoff=Backoff(0.01, 0.05), task_status=task_status
            )
        )
        with trio.fail_after(10):
            while _count("pending_expiry", "store:readonly") - before < 4:
                await trio.sleep(0.01)
        held_now = await store.get_pending(request.id)
        assert held_now is not None and held_now.status is PendingStatus.PENDING
        await set_read_only(store, False)  # the fault clears; the loop notices by itself
        with trio.fail_after(10):
            while (await store.get_pending(request.id)).status is not PendingStatus.EXPIRED:  # type: ignore[union-attr]
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    faults = [m for m in _events(caplog, "background_fault") if "loop=pending_expiry" in m]
    cleared = [m for m in _events(caplog, "background_fault_cleared") if "loop=pending_expiry" in m]
    assert len(faults) == 1 and "kind=store:readonly" in faults[0], faults
    assert len(cleared) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per failure


def test_expiry_interval_follows_the_shortest_ttl() -> None:
    assert expiry_interval([]) == 60
    assert expiry_interval([dt.timedelta(days=7), dt.timedelta(hours=1)]) == 60
    assert expiry_interval([dt.timedelta(seconds=8)]) == 2
    assert expiry_interval([dt.timedelta(seconds=1)]) == 1


async def test_metrics_refresh_fault_is_counted_logged_once_and_scrapes_still_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    broken = [True]

    async def refresh() -> None:
        if broken[0]:
            raise StoreError("disk I/O error (SQLITE_IOERR_READ)", "io")

    app = create_metrics_app(None, refresh)
    client = app.test_client()
    before = _count("metrics_refresh", "store:io")
    for _ in range(3):
        response = await client.get("/metrics")
        assert response.status_code == 200
    assert _count("metrics_refresh", "store:io") - before == 3
    broken[0] = False
    assert (await client.get("/metrics")).status_code == 200
    faults = [m for m in _events(caplog, "background_fault") if "loop=metrics_refresh" in m]
    assert len(faults) == 1 and "kind=store:io" in faults[0]
    assert len([m for m in _events(caplog, "background_fault_cleared") if "loop=metrics_refresh" in m]) == 1
