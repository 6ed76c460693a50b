"""A token worker process: `python -m scepd.keys.pkcs11.worker FD`, started by the pool.

One fresh interpreter per worker (never a fork of the threaded daemon) that
loads the PKCS#11 module, logs in once and answers the pool's requests over
the socket FD until EOF. It imports the session and the lock only, not the
pool, so it starts quickly and without trio or the metrics.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from scepd.keys.pkcs11 import lock as token_lock
from scepd.keys.pkcs11.session import TokenSession, start_failure


def worker_main(conn: Connection, cfg: Any) -> None:
    """Serve one worker process: log in once, then answer requests until EOF."""
    try:
        with token_lock.exclusive(cfg.module, cfg.softhsm2_conf, getattr(cfg, "timeout", 30.0)):
            session = TokenSession(cfg)
            inventory = session.inventory()
    except Exception as e:  # noqa: BLE001
        conn.send(("start", start_failure(e)))
        return
    conn.send(("ok", inventory))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            break
        conn.send(session.dispatch(op, args))
    session.close()


class WorkerConfig:
    """The TokenConfig a worker process receives (as a dict, over its socket).

    Not a SimpleNamespace: that repr would print the PIN in any traceback or
    debug line that shows the config. Not the TokenConfig itself: a worker
    process needs no more than the session, so it starts without trio or the metrics.
    """

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'<secret>' if k == 'pin' else repr(v)}" for k, v in vars(self).items())
        return f"WorkerConfig({shown})"

    __str__ = __repr__


def main(fd: int) -> None:
    """`python -m scepd.keys.pkcs11.worker FD`: FD is a socket to the TokenPool; the config comes over it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop (EOF)
    conn = Connection(fd)
    try:
        cfg = WorkerConfig(**conn.recv())
    except EOFError:
        return
    worker_main(conn, cfg)


if __name__ == "__main__":
    main(int(sys.argv[1]))
