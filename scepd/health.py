"""Readiness: can this daemon issue a certificate right now?

Each check is a cheap round trip to one dependency: a random-bytes call on the
token, a one-row write to the store, and (where Intune is configured) getting
Entra tokens and the discovered service list. Every check has a short timeout
and its result is cached briefly, so a storm of probes or scrapes costs one
round trip per dependency per cache period; Intune's cache is longer, because
its check may cost Entra a token request.

`/readyz`, the systemd watchdog and the `scepd_ready{check}` gauge all read
the same `Readiness`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from scepd import metrics
from scepd.logs import event

log = logging.getLogger("scepd.health")

Probe = Callable[[], Awaitable[str | None]]  # a probe may return a note for a passing check


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str


class Check:
    """One dependency probe with a timeout and a result cache (success and failure cached separately)."""

    def __init__(self, name: str, probe: Probe, *, timeout: float, cache_ok: float, cache_failed: float) -> None:
        self.name = name
        self.probe = probe
        self.timeout = timeout
        self.cache_ok = cache_ok
        self.cache_failed = cache_failed
        self._last: CheckResult | None = None
        self._at = -float("inf")
        self._lock = trio.Lock()  # concurrent callers share one probe instead of stacking them

    def cached(self) -> CheckResult | None:
        """The last result while it is within its cache period, else None."""
        last = self._last
        if last is not None and trio.current_time() - self._at < (self.cache_ok if last.ok else self.cache_failed):
            return last
        return None

    async def run(self) -> CheckResult:
        async with self._lock:
            cached = self.cached()
            if cached is not None:
                return cached
            last = self._last
            result = await self._probe()
            if last is None or last.ok != result.ok:
                level = logging.INFO if result.ok else logging.WARNING
                event(log, level, "readiness_changed", check=self.name, ok=result.ok, reason=result.reason)
            self._last, self._at = result, trio.current_time()
            metrics.READY.labels(self.name).set(1 if result.ok else 0)
            return result

    async def _probe(self) -> CheckResult:
        try:
            with trio.fail_after(self.timeout):
                note = await self.probe()
        except trio.TooSlowError:
            return CheckResult(self.name, False, f"no answer within {self.timeout:g} s")
        except Exception as e:  # noqa: BLE001 - any fault of the dependency is a reason, never a crash of the probe
            text = str(e).splitlines()[0] if str(e) else ""
            return CheckResult(self.name, False, f"{type(e).__name__}: {text}"[:200])
        return CheckResult(self.name, True, note or "ok")


class Readiness:
    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks

    @classmethod
    def build(cls, *, token: Probe, store: Probe, intune: Probe | None = None) -> Readiness:
        checks = [
            Check("token", token, timeout=5.0, cache_ok=1.0, cache_failed=1.0),
            Check("store", store, timeout=5.0, cache_ok=1.0, cache_failed=1.0),
        ]
        if intune is not None:
            checks.append(Check("intune", intune, timeout=10.0, cache_ok=30.0, cache_failed=10.0))
        return cls(checks)

    async def run(self, names: tuple[str, ...] | None = None) -> list[CheckResult]:
        """Run the checks (all, or those named) concurrently; results in the order of `self.checks`."""
        chosen = [c for c in self.checks if names is None or c.name in names]
        cached = [c.cached() for c in chosen]
        if all(r is not None for r in cached):
            # Every answer is still fresh: no task, lock or thread, so a probe of a loaded daemon does
            # not wait for the scheduler to come round several times to be told what is known already.
            return [r for r in cached if r is not None]
        results: dict[str, CheckResult] = {}

        async def one(check: Check) -> None:
            results[check.name] = await check.run()

        async with trio.open_nursery() as nursery:
            for check in chosen:
                nursery.start_soon(one, check)
        return [results[c.name] for c in chosen]

    async def report(self, *, detailed: bool = True) -> tuple[int, str]:
        """HTTP status (200 or 503) and the JSON body of /readyz.

        `detailed=False` is for the public SCEP listener: a failing check says
        only that it fails, since its reason is exception text (paths, token and
        library messages) that devices and scanners have no business reading.
        The operator's listener gets the reasons.
        """
        results = await self.run()
        ready = all(r.ok for r in results)

        def reason(r: CheckResult) -> str:
            return r.reason if detailed or r.ok else PUBLIC_FAILURE

        body = {
            "status": "ready" if ready else "not ready",
            "checks": {r.name: {"ok": r.ok, "reason": reason(r)} for r in results},
        }
        return (200 if ready else 503), json.dumps(body) + "\n"


PUBLIC_FAILURE = "failing; the reason is on the metrics listener's /readyz"
