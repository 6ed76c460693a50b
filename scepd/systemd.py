"""The systemd notify protocol (sd_notify(3)), spoken directly: no dependency.

systemd gives a Type=notify service the path of a unix datagram socket in
$NOTIFY_SOCKET (a leading '@' means the abstract namespace); each datagram is
newline-separated KEY=VALUE assignments. scepd sends READY=1 once it serves,
WATCHDOG=1 at half of $WATCHDOG_USEC while the token and the store answer
(the token alone with a PostgreSQL store: scepd/server.py says why),
RELOADING=1/READY=1 around a SIGHUP reload, and STOPPING=1 on shutdown.
Without $NOTIFY_SOCKET every call is a no-op, so the daemon runs the same
outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from scepd.logs import event

log = logging.getLogger("scepd.systemd")


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram; False (and a log line) if it could not be sent. Never raises."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A datagram to a local socket is sent at once or fails at once: no blocking here.
            self._socket.sendto("\n".join(assignments).encode("utf-8"), target)
        except OSError as e:
            event(log, logging.WARNING, "sd_notify_failed", socket=self.address, error=str(e))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd 253+ checks MONOTONIC_USEC to match the reload to the signal it sent.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog is asked for.

    $WATCHDOG_PID, when set, must be this process (systemd sets it so a child
    does not take the parent's watchdog by inheritance).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


async def watchdog(
    notifier: Notifier,
    interval: float,
    healthy: Callable[[], Awaitable[bool]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping WATCHDOG=1 every `interval` seconds while `healthy()`; a missed ping lets systemd restart us."""
    task_status.started()
    due = trio.current_time()
    while True:
        due += interval
        with trio.move_on_at(due):
            if await healthy():
                notifier.notify("WATCHDOG=1")
            else:
                event(log, logging.WARNING, "watchdog_skipped", reason="unhealthy")
        await trio.sleep_until(due)
