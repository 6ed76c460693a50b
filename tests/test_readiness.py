"""Readiness checks (scepd/health.py) with faults injected into their probes, in Trio's virtual time:
timeouts, the result cache, one probe shared by concurrent callers, and what is logged when the verdict flips.
No daemon, no subprocess; the autojump clock makes a 5 s timeout take no real time."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from scepd.health import Check, Readiness


class Probe:
    """A dependency whose next answers the test chooses: ok, an exception, or no answer at all."""

    def __init__(self) -> None:
        self.calls = 0
        self.fault: BaseException | None = None
        self.hang = False
        self.release = trio.Event()

    async def __call__(self) -> str | None:
        self.calls += 1
        if self.hang:
            await trio.sleep_forever()
        if self.fault is not None:
            raise self.fault
        await self.release.wait()
        return None


@pytest.fixture
def probe() -> Probe:
    p = Probe()
    p.release.set()
    return p


async def test_a_probe_that_never_answers_fails_after_its_timeout(
    probe: Probe, autojump_clock: trio.testing.MockClock
) -> None:
    probe.hang = True
    started = trio.current_time()
    result = await Check("token", probe, timeout=5, cache_ok=1, cache_failed=1).run()
    assert (result.ok, result.reason) == (False, "no answer within 5 s")
    assert trio.current_time() - started == pytest.approx(5)


async def test_a_fault_is_a_reason_of_one_line_never_an_exception(probe: Probe) -> None:
    probe.fault = OSError("disk I/O error\nsecond line")
    result = await Check("store", probe, timeout=5, cache_ok=1, cache_failed=1).run()
    assert (result.ok, result.reason) == (False, "OSError: disk I/O error")


async def test_results_are_cached_for_their_own_period(probe: Probe, autojump_clock: trio.testing.MockClock) -> None:
    check = Check("intune", probe, timeout=10, cache_ok=30, cache_failed=10)
    assert (await check.run()).ok and probe.calls == 1
    await trio.sleep(29)
    assert (await check.run()).ok and probe.calls == 1  # cached
    await trio.sleep(1)
    probe.fault = RuntimeError("Entra refused")
    assert not (await check.run()).ok and probe.calls == 2
    probe.fault = None
    await trio.sleep(9)
    assert not (await check.run()).ok and probe.calls == 2  # a failure is kept for its shorter period
    await trio.sleep(1)
    assert (await check.run()).ok and probe.calls == 3


async def test_concurrent_callers_share_one_probe(probe: Probe) -> None:
    probe.release = trio.Event()
    check = Check("token", probe, timeout=5, cache_ok=1, cache_failed=1)
    results = []

    async def ask() -> None:
        results.append(await check.run())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert probe.calls == 1
        probe.release.set()
    assert probe.calls == 1 and len(results) == 20 and all(r.ok for r in results)


async def test_report_is_503_while_any_check_fails_and_logs_each_flip_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    token, store = Probe(), Probe()
    token.release.set()
    store.release.set()
    readiness = Readiness.build(token=token, store=store)
    with caplog.at_level(logging.INFO, logger="scepd.health"):
        assert (await readiness.report())[0] == 200
        store.fault = OSError("database is locked")
        for _ in range(3):
            await trio.sleep(1)
            assert (await readiness.report())[0] == 503
        store.fault = None
        await trio.sleep(1)
        assert (await readiness.report())[0] == 200
    flips = [r.getMessage() for r in caplog.records if "event=readiness_changed check=store" in r.getMessage()]
    assert [("ok=True" in m) for m in flips] == [True, False, True], flips


async def test_fresh_results_are_answered_without_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While every result is within its cache period, `run` asks nothing and never yields to the scheduler
    (on a loaded daemon each yield waits for the other tasks); once one is stale, that one is probed."""
    token, store = Probe(), Probe()
    token.release.set()
    store.release.set()
    readiness = Readiness.build(token=token, store=store)
    await readiness.run()
    with trio.testing.assert_no_checkpoints():
        results = await readiness.run()
    assert [r.ok for r in results] == [True, True] and (token.calls, store.calls) == (1, 1)
    await trio.sleep(1)
    store.fault = OSError("disk I/O error")
    results = await readiness.run()
    assert [r.ok for r in results] == [True, False] and (token.calls, store.calls) == (2, 2)
