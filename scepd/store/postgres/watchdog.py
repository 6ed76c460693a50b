"""A bound on every call to the database, for a server that stops answering without closing anything.

`statement_timeout` only helps while the server still runs: it is the server
that cancels the statement. A host that froze, a server stuck on a dead disk,
or a network that drops packets without a reset leave the connection open and
silent; TCP keepalives are answered by a live kernel whatever its PostgreSQL
does, and do not apply to unix sockets at all. A blocked psycopg call then
holds the connection's thread, and every request queued behind it, until the
server comes back: hours, perhaps.

So each call carries a deadline. A call still queued when its deadline passes
never runs; a call still running then has its socket shut down by the
`Watchdog` thread, which makes the blocked libpq read return at once with an
error. Whether a COMMIT in flight at that moment happened is unknown, as with
any lost connection (put_issued's `once` covers an enrollment's retry), and
the connection is made again on the next call.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Protocol

import psycopg

# How often the watchdog looks at the calls in progress: a call overruns its deadline by at most this.
POLL = 0.2


class Overdue(psycopg.OperationalError):
    """The call did not finish within its bound (it may have committed; the caller cannot know).

    An OperationalError without a SQLSTATE, like any other lost connection, so it maps to `cantopen`."""


class Watched(Protocol):
    def break_if_overdue(self, now: float) -> None: ...


class Watchdog:
    """One thread per store, waking every POLL seconds to break the connections of overdue calls."""

    def __init__(self, watched: list[Watched], name: str = "scepd-store-watchdog") -> None:
        self._watched = watched
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            now = time.monotonic()
            for item in self._watched:
                item.break_if_overdue(now)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def socket_of(fileno: int) -> socket.socket:
    """A duplicate of a connection's socket descriptor, for `shut_down` from another thread.

    Its owner keeps it open until the connection is closed and forgotten: even if libpq closes its own
    descriptor meanwhile, the number cannot be reused under the watchdog for another file."""
    return socket.fromfd(fileno, socket.AF_UNIX, socket.SOCK_STREAM)  # the family is not checked


def shut_down(sock: socket.socket) -> None:
    """Shut the socket down both ways: a read blocked on it, in any thread and any descriptor, returns."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected: nothing left to break
        pass
