"""A store's fault state, the same for every backend: what readiness reads and how a fault is told.

A fault starts with the first error that is the store's (a constraint is the caller's, and says
nothing about the store's health), is logged once per episode and counted every time, and ends with
the next write that commits: reads prove nothing, since they still work on a full disk or a
read-only standby.
"""

from __future__ import annotations

import trio

from scepd import metrics
from scepd.episodes import Episode
from scepd.store.base import StoreError


class FaultState:
    """The last store error while calls fail, and when a write last committed."""

    def __init__(self, episode: Episode) -> None:
        self._episode = episode
        self.fault: StoreError | None = None
        # When (`trio.current_time()`) a write last committed; None until then and after any fault.
        self.last_commit: float | None = None

    def committed(self) -> None:
        """A write committed: the fault, if any, is over."""
        self.last_commit = trio.current_time()
        if self.fault is not None:
            self.fault = None
            self._episode.succeeded()

    def failed(self, error: StoreError) -> StoreError:
        """Count every store error; log a fault once per episode (the caller answers 503, no traceback)."""
        metrics.STORE_ERRORS.labels(error.kind).inc()
        if error.kind != "constraint":
            self.fault, self.last_commit = error, None
            self._episode.failed(error.kind, str(error))
        return error
