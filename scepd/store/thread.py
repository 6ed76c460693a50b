"""A thread that owns one blocking database connection and runs the calls queued for it.

Both backends use it: sqlite3 and psycopg's sync connections block, and a
connection must not be used from two threads at once. It used to be one
worker thread per call behind a `CapacityLimiter(1)`, but then the connection
sat idle from the end of each call until the busy event loop had taken the
result and let the next caller in: under load a call held the limiter for
about 4 ms to do 0.6 ms of work, and callers queued 20 to 140 ms for it
(bench/intune_load.py, issue 16). Here the thread runs queued calls back to
back and hands each result to its waiting task.

A queued call that is cancelled before it starts is dropped; once started it
is never abandoned: the caller waits for it to commit or roll back, so a
cancelled request cannot leave a transaction half-open for the next one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import outcome
import trio

T = TypeVar("T")
C = TypeVar("C")

_PR_SET_NAME = 15  # prctl(2): name the calling thread


def _name_os_thread(name: str) -> None:
    """Give the OS thread the Python thread's name (at most 15 bytes), as Trio does for its own.

    Python before 3.14 leaves it as the process's name, so `top -H`, py-spy and /proc/PID/task/*/comm
    could not tell the store's threads from the token's or any other; bench/loadgen.py's CPU split
    reads it. Best effort: without a C library that has prctl (not Linux) the thread stays unnamed.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class _Call(Generic[C, T]):
    work: Callable[[C], T]
    task: trio.lowlevel.Task
    token: trio.lowlevel.TrioToken
    state: Literal["queued", "cancelled", "running"] = "queued"
    lock: threading.Lock = field(default_factory=threading.Lock)


class ConnectionThread(Generic[C]):
    """The thread that owns `conn`: `call(work)` runs `work(conn)` there, after the calls queued
    before it; `stop()` runs `close(conn)` after them and ends the thread."""

    def __init__(self, conn: C, name: str, close: Callable[[C], object]) -> None:
        self._queue: queue.SimpleQueue[_Call[C, Any] | None] = queue.SimpleQueue()
        self._close = close
        self._thread = threading.Thread(target=self._serve, args=(conn,), name=name, daemon=True)
        self._thread.start()

    async def call(self, work: Callable[[C], T]) -> T:
        call: _Call[C, T] = _Call(work, trio.lowlevel.current_task(), trio.lowlevel.current_trio_token())
        self._queue.put(call)

        def abort(_: Any) -> trio.lowlevel.Abort:
            with call.lock:
                if call.state == "queued":
                    call.state = "cancelled"
                    return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED  # running: it finishes, and its result comes back

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def stop(self) -> None:
        """Close the connection after the calls already queued, and end the thread."""
        self._queue.put(None)
        await trio.to_thread.run_sync(self._thread.join)

    def _serve(self, conn: C) -> None:
        _name_os_thread(threading.current_thread().name)
        try:
            while (call := self._queue.get()) is not None:
                with call.lock:
                    if call.state == "cancelled":
                        continue
                    call.state = "running"
                result = outcome.capture(call.work, conn)
                try:
                    call.token.run_sync_soon(trio.lowlevel.reschedule, call.task, result)
                except trio.RunFinishedError:  # nobody left to tell
                    pass
        finally:
            self._close(conn)
