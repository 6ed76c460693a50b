"""Which node runs the background loops that must run once per deployment.

Several nodes may share one PostgreSQL store. CRL signing, the expiry of
held requests and the Intune revocation sync each change shared state, so
one node at a time runs them: the holder of a lease kept in the store
(`Leases`). The other nodes run their `follow` tasks instead (the CRL
publisher serving what the leader signed) and try to claim the lease every
third of its length. Per-node work (metrics, readiness, the CA expiry
warning) is not this module's business.

Why a lease row and not a PostgreSQL advisory lock: after a network
partition the server keeps a dead client's session, and the lock with it,
until its own TCP keepalive gives up (two hours by default); a lease ends
when we say. The store times the lease on its clock (PostgreSQL's for every
node), so skew between the nodes' clocks does not matter.

The leader bounds its own stay on its monotonic clock: it leads until
`lease - margin` after the *start* of its last successful renewal, so a
renewal that was slow, failed or hangs in the store cannot make it overstay
the lease another node sees expire. When that time passes, or a renewal is
refused, its leader tasks are cancelled and the follow tasks start. A clean
stop releases the lease, so another node takes over at its next attempt.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence

import trio

from scepd import metrics
from scepd.episodes import Episode, fault_kind
from scepd.logs import event
from scepd.store.base import StoreError
from scepd.store.roles import Leases

log = logging.getLogger("scepd.leader")

LEASE_NAME = "background"  # the one lease of the background loops
RENEWALS_PER_LEASE = 3  # the leader renews, and followers try, every lease / 3
MARGIN_SHARE = 1 / 6  # the leader stops this share of the lease before the store would let another in
RELEASE_TIMEOUT = 5.0  # seconds a clean stop spends releasing the lease at most

Task = Callable[..., Awaitable[None]]  # a background loop, started with `nursery.start`


def holder_id(node_name: str) -> str:
    """This process's name on the lease: the node, its PID and a random part, so a restarted node
    (or a second daemon on one host) is never mistaken for the holder it replaces."""
    return f"{node_name}:{os.getpid()}:{secrets.token_hex(4)}"


class Leadership:
    """Run `lead` tasks while this process holds the lease, `follow` tasks while it does not."""

    def __init__(self, leases: Leases, holder: str, *, lease: float, name: str = LEASE_NAME) -> None:
        if lease <= 0:
            raise ValueError("the lease must last a positive number of seconds")
        self.leases, self.holder, self.lease, self.name = leases, holder, lease, name
        self.renew_every = lease / RENEWALS_PER_LEASE
        self.hold_for = lease * (1 - MARGIN_SHARE)
        self._until = -math.inf  # trio.current_time() until which this process may lead
        self._wake = trio.Event()  # replaced after every claim, so waiters see each outcome
        self._held = False  # whether a claim ever succeeded (then a clean stop releases the lease)
        self._episode = Episode(log, "background_fault", loop="leader_lease")

    @property
    def leading(self) -> bool:
        """Whether this process may run the leader tasks now (call inside trio)."""
        return trio.current_time() < self._until

    async def run(
        self,
        lead: Sequence[Task],
        follow: Sequence[Task] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Claim, then switch between the two sets of tasks until cancelled; reports started once the
        first set has started. On the way out the lease is released (after the leader tasks ended)."""
        metrics.LEADER.set(0)
        try:
            await self._claim()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_claiming)
                await self._switch(lead, follow, task_status)
        finally:
            with trio.CancelScope(shield=True):
                metrics.LEADER.set(0)
                await self._release()

    async def _claim(self) -> None:
        started = trio.current_time()
        try:
            held = await self.leases.claim(self.name, self.holder, self.lease)
        except Exception as e:  # noqa: BLE001 - no fault here ends the daemon; the deadline decides
            kind = fault_kind(e)
            metrics.BACKGROUND_FAILURES.labels("leader_lease", kind).inc()
            self._episode.failed(kind, f"{type(e).__name__}: {str(e)[:200]}")
        else:
            self._episode.succeeded()
            # Another holder's lease still runs: whatever this process believed, it does not lead.
            self._until = started + self.hold_for if held else -math.inf
            self._held = self._held or held
        self._wake.set()
        self._wake = trio.Event()

    async def _keep_claiming(self) -> None:
        due = trio.current_time() + self.renew_every
        while True:
            await trio.sleep_until(due)
            due = trio.current_time() + self.renew_every
            await self._claim()

    async def _wait_for_claim(self) -> None:
        await self._wake.wait()

    async def _switch(self, lead: Sequence[Task], follow: Sequence[Task], task_status: trio.TaskStatus[None]) -> None:
        reported = False

        def started() -> None:
            nonlocal reported
            if not reported:
                task_status.started()
                reported = True

        while True:
            if self.leading:
                event(log, logging.INFO, "leader_acquired", lease=self.name, holder=self.holder, seconds=self.lease)
                metrics.LEADER.set(1)
                reason = "stopping"  # unless _lead returns: cancelled from outside, the daemon is stopping
                try:
                    reason = await self._lead(lead, started)
                finally:
                    metrics.LEADER.set(0)
                    level = logging.INFO if reason == "stopping" else logging.WARNING
                    event(log, level, "leader_lost", lease=self.name, holder=self.holder, reason=reason)
            else:
                await self._follow(follow, started)

    async def _lead(self, lead: Sequence[Task], started: Callable[[], None]) -> str:
        """Run the leader tasks until the lease may have run out or another holds it; which of the two."""
        why = "renewal_overdue"
        with trio.CancelScope(deadline=self._until) as scope:

            async def track_claims() -> None:
                # Beside the tasks' start-up too: a slow start (the first CRL of a large store) must
                # neither miss a renewal that moves the deadline on nor outlive a refused one.
                nonlocal why
                while True:
                    await self._wait_for_claim()
                    if self._until == -math.inf:
                        why = "held_by_another"
                        scope.cancel()
                        return
                    scope.deadline = self._until

            async with trio.open_nursery() as nursery:
                nursery.start_soon(track_claims)
                for task in lead:
                    await nursery.start(task)
                started()
        return why

    async def _follow(self, follow: Sequence[Task], started: Callable[[], None]) -> None:
        async with trio.open_nursery() as nursery:
            for task in follow:
                await nursery.start(task)
            started()
            while not self.leading:
                await self._wait_for_claim()
            nursery.cancel_scope.cancel()

    async def _release(self) -> None:
        """Give the lease up, so another node need not wait for it to expire (it is ours only if held)."""
        if not self._held:
            return
        # The timeout spares a stop the wait for a store that is down; a call the store's thread has
        # started is still waited for (scepd/store/thread.py), so it cannot bound a hung one.
        with trio.move_on_after(RELEASE_TIMEOUT):
            try:
                await self.leases.release(self.name, self.holder)
            except StoreError as e:
                event(log, logging.WARNING, "leader_release_failed", lease=self.name, error=str(e))
