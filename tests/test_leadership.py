"""scepd.leadership with trio on a real SQLite store: who runs the leader tasks, stepping down when
renewals fail (a read-only store) or hang (another connection holds the write lock), taking over, and
releasing the lease on the way out."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from scepd import metrics
from scepd.leadership import LEASE_NAME, Leadership, holder_id
from scepd.store.sqlite import SqliteStore
from tests.store.backend import set_read_only

LEASE = 1.2  # seconds: renewals every 0.4 s, a leader stops 1.0 s after its last good renewal began


class Loop:
    """A background task that records when it runs; `start_up` seconds pass before it reports started."""

    def __init__(self, start_up: float = 0.0) -> None:
        self.start_up = start_up
        self.running = False
        self.starts = 0
        self.stopped_at: list[float] = []

    async def __call__(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        self.starts += 1
        await trio.sleep(self.start_up)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.running = False
            self.stopped_at.append(trio.current_time())


async def until(condition: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.sqlite3") as s:
        yield s


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "scepd.leader" and f"event={name} " in r.getMessage()]


def test_holder_ids_name_the_node_and_differ_per_start() -> None:
    first, second = holder_id("ca-1"), holder_id("ca-1")
    assert first.startswith("ca-1:") and second.startswith("ca-1:") and first != second


async def test_the_leader_runs_the_loops_and_releases_the_lease_on_exit(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "scepd.leader")
    lead, follow = Loop(), Loop()
    leadership = Leadership(store, "node-a", lease=LEASE)
    async with trio.open_nursery() as nursery:
        await nursery.start(leadership.run, [lead], [follow])
        assert lead.running and not follow.running and leadership.leading
        assert metrics.LEADER._value.get() == 1
        await trio.sleep(LEASE * 2)  # renewed meanwhile: still leading, the loop never restarted
        assert lead.running and lead.starts == 1 and follow.starts == 0
        nursery.cancel_scope.cancel()
    assert not lead.running and metrics.LEADER._value.get() == 0
    assert len(events(caplog, "leader_acquired")) == 1
    assert [m for m in events(caplog, "leader_lost") if "reason=stopping" in m]
    assert await store.claim(LEASE_NAME, "node-b", LEASE)  # released: another takes it at once


async def test_of_two_one_leads_and_the_other_takes_over_when_it_stops(store: SqliteStore) -> None:
    loops = {name: (Loop(), Loop()) for name in ("a", "b")}
    async with trio.open_nursery() as outer:
        scopes = {}
        for name, (lead, follow) in loops.items():
            scope = trio.CancelScope()
            scopes[name] = scope

            async def one(
                name: str = name, scope: trio.CancelScope = scope, lead: Loop = lead, follow: Loop = follow
            ) -> None:
                with scope:
                    await Leadership(store, f"node-{name}", lease=LEASE).run([lead], [follow])

            outer.start_soon(one)
        await until(lambda: loops["a"][0].running or loops["b"][0].running)
        await trio.sleep(LEASE)
        leader = "a" if loops["a"][0].running else "b"
        other = "b" if leader == "a" else "a"
        assert not loops[other][0].running and loops[other][1].running  # exactly one leads; the other follows
        scopes[leader].cancel()
        stopped = trio.current_time()
        await until(lambda: loops[other][0].running, timeout=LEASE)
        # Released on the way out: taken at the follower's next attempt, not after the lease expired.
        assert trio.current_time() - stopped <= LEASE / 3 + 0.3
        assert not loops[other][1].running
        outer.cancel_scope.cancel()


async def test_a_store_fault_makes_the_leader_step_down_in_time_and_it_leads_again_after(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "scepd.leader")
    lead, follow = Loop(), Loop()
    leadership = Leadership(store, "node-a", lease=LEASE)
    async with trio.open_nursery() as nursery:
        await nursery.start(leadership.run, [lead], [follow])
        assert lead.running
        await set_read_only(store, True)  # every renewal now fails in the database
        broken = trio.current_time()
        await until(lambda: follow.running, timeout=LEASE + 1)
        assert not lead.running and metrics.LEADER._value.get() == 0
        # Stopped before the lease ran out: the last good renewal began at most a renewal interval
        # before the fault, and the leader stops `hold_for` after that.
        assert lead.stopped_at[0] - broken <= leadership.hold_for + 0.1
        assert [m for m in events(caplog, "leader_lost") if "reason=renewal_overdue" in m]
        await set_read_only(store, False)
        await until(lambda: lead.running, timeout=LEASE)
        assert lead.starts == 2 and not follow.running
        nursery.cancel_scope.cancel()
    assert len(events(caplog, "leader_acquired")) == 2


async def test_a_hung_renewal_cannot_keep_the_leader_in_place(
    store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds SQLite's write lock: the renewal waits (busy_timeout, 5 s), longer than the
    lease; the leader must stop on its own clock, not when the call returns."""
    caplog.set_level(logging.INFO, "scepd.leader")
    lead, follow = Loop(), Loop()
    leadership = Leadership(store, "node-a", lease=LEASE)
    blocker = sqlite3.connect(tmp_path / "scepd.sqlite3", isolation_level=None, check_same_thread=False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(leadership.run, [lead], [follow])
            blocker.execute("BEGIN IMMEDIATE")
            held = trio.current_time()
            await until(lambda: follow.running, timeout=LEASE + 1)
            assert lead.stopped_at[0] - held <= leadership.hold_for + 0.1
            await trio.sleep(0.5)
            assert not lead.running  # still hung: it stays a follower
            blocker.execute("COMMIT")
            await until(lambda: lead.running, timeout=LEASE + 1)
            nursery.cancel_scope.cancel()
    finally:
        blocker.close()
    assert [m for m in events(caplog, "leader_lost") if "reason=renewal_overdue" in m]


async def test_a_lease_held_by_another_makes_the_leader_step_down_at_once(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "scepd.leader")
    lead, follow = Loop(), Loop()
    leadership = Leadership(store, "node-a", lease=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(leadership.run, [lead], [follow])
        assert lead.running
        # As if the lease had expired and another node had taken it.
        await store.database.execute("UPDATE leases SET holder = 'node-b' WHERE name = ?", (LEASE_NAME,))
        changed = trio.current_time()
        await until(lambda: follow.running, timeout=leadership.hold_for)
        # At the next renewal, well before its own deadline would have ended it.
        assert trio.current_time() - changed <= leadership.renew_every + 0.3 < leadership.hold_for
        assert not lead.running and not leadership.leading
        nursery.cancel_scope.cancel()
    assert [m for m in events(caplog, "leader_lost") if "reason=held_by_another" in m]
    assert not await store.claim(LEASE_NAME, "node-c", 30)  # not ours: the exit did not release it


async def test_a_follower_that_never_wins_never_runs_the_loops(store: SqliteStore) -> None:
    assert await store.claim(LEASE_NAME, "node-b", 30)
    lead, follow = Loop(), Loop()
    async with trio.open_nursery() as nursery:
        await nursery.start(Leadership(store, "node-a", lease=LEASE).run, [lead], [follow])
        assert follow.running
        await trio.sleep(LEASE)
        assert lead.starts == 0 and follow.starts == 1
        nursery.cancel_scope.cancel()


async def test_a_slow_start_of_the_leader_tasks_does_not_cost_the_lease(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Like the CRL publisher of a large store, a task takes longer to start than the leader may go
    without renewing: the renewals made meanwhile keep it leading."""
    caplog.set_level(logging.INFO, "scepd.leader")
    leadership = Leadership(store, "node-a", lease=LEASE)
    slow, follow = Loop(start_up=leadership.hold_for * 1.5), Loop()
    # Without the renewals counted during the start, it lost the lease at every start and never reported
    # started: the daemon's start-up would hang. Here a bound turns that into a failure.
    with trio.fail_after(LEASE * 4):
        async with trio.open_nursery() as nursery:
            await nursery.start(leadership.run, [slow], [follow])
            assert slow.running and slow.starts == 1 and not follow.running
            await trio.sleep(LEASE)
            assert slow.running and slow.starts == 1 and follow.starts == 0
            nursery.cancel_scope.cancel()
    lost = events(caplog, "leader_lost")
    assert len(lost) == 1 and "reason=stopping" in lost[0], lost
