"""Faults that last: log once when one starts and once when it ends, retry with backoff.

A full disk or an unreachable dependency fails every request and every loop
iteration until someone fixes it. A log line (or a traceback) per failure
buries the one line that matters, so a fault is an *episode*: one event when
it starts (or its kind changes), one when it clears, with how long it lasted
and how many failures it cost. Counting every failure is the metrics' job.

Background loops use `Backoff` between failed iterations, so a fault costs
a few attempts a minute, not a busy loop, and recovery is noticed by itself.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

import trio

from scepd import metrics
from scepd.logs import event
from scepd.store.base import StoreError


class Episode:
    """The fault state of one thing (the store, a background loop), logged on changes only."""

    def __init__(self, log: logging.Logger, event: str, **context: str) -> None:
        self.log = log
        self.event = event  # e.g. "store_fault": logged as event=store_fault / event=store_fault_cleared
        self.context = context
        self.kind: str | None = None  # the current fault's kind; None when healthy
        self.cause = ""
        self.failures = 0
        self._since = 0.0

    @property
    def active(self) -> bool:
        return self.kind is not None

    def failed(self, kind: str, cause: str) -> bool:
        """Record one failure; logs (and returns True) only when an episode starts or changes kind."""
        self.failures += 1
        if self.kind == kind:
            return False
        if self.kind is None:
            self._since = time.monotonic()
            self.failures = 1
        self.kind, self.cause = kind, cause
        event(self.log, logging.WARNING, self.event, **self.context, kind=kind, cause=cause)
        return True

    def succeeded(self) -> bool:
        """Record a success; logs (and returns True) only when it ends an episode."""
        if self.kind is None:
            return False
        lasted = time.monotonic() - self._since
        event(
            self.log,
            logging.INFO,
            f"{self.event}_cleared",
            **self.context,
            kind=self.kind,
            failures=self.failures,
            seconds=f"{lasted:.1f}",
        )
        self.kind, self.cause, self.failures = None, "", 0
        return True


class Backoff:
    """Exponential delays with jitter between failed attempts, reset by a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt; each call lengthens the one after."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay * random.uniform(0.8, 1.0)  # jitter: several processes do not retry in step

    def reset(self) -> None:
        self._next = self.initial


def fault_kind(error: BaseException) -> str:
    """A short label for what failed: store:<kind> for the store, else the exception's type name."""
    if isinstance(error, StoreError):
        return f"store:{error.kind}"
    return type(error).__name__


async def keep_running(
    name: str,
    once: Callable[[], Awaitable[object]],
    *,
    interval: float,
    backoff: Backoff | None = None,
    log: logging.Logger | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `once` every `interval` seconds until cancelled; no fault of it ends the daemon.

    A failure is counted (scepd_background_failures_total{loop, kind}), logged
    once per episode (event=background_fault loop=NAME, then
    event=background_fault_cleared), and retried after a backoff that grows
    up to `interval`-independent limits; the first success resets it.
    """
    log = log or logging.getLogger("scepd.background")
    episode = Episode(log, "background_fault", loop=name)
    backoff = backoff or Backoff(initial=1.0, maximum=60.0)
    task_status.started()
    while True:
        try:
            await once()
        except Exception as e:  # noqa: BLE001 - a background loop outlives any one fault
            kind = fault_kind(e)
            metrics.BACKGROUND_FAILURES.labels(name, kind).inc()
            text = str(e).splitlines()[0] if str(e) else ""
            episode.failed(kind, f"{type(e).__name__}: {text}"[:300])
            await trio.sleep(backoff.next())
            continue
        episode.succeeded()
        backoff.reset()
        await trio.sleep(interval)
