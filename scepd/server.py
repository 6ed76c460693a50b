"""Serve what scepd.wiring builds: the SCEP and metrics listeners, signals, systemd, and the
serving processes beside the primary.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from scepd import serving
from scepd.config import Config
from scepd.errors import ListenError, first_leaf
from scepd.http.app import Site, create_app
from scepd.http.metrics_app import create_metrics_app
from scepd.logs import event
from scepd.reload import reload_config
from scepd.systemd import Notifier, watchdog, watchdog_interval
from scepd.wiring import open_site

log = logging.getLogger("scepd")


def hypercorn_config(
    config: Config, host: str | None = None, port: int | None = None, fd: int | None = None
) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [
        f"fd://{fd}"
        if fd is not None
        else f"{host or config.listen_host}:{config.listen_port if port is None else port}"
    ]
    hc.accesslog = None
    # A logger, not hypercorn's "-": its messages then go through scepd's logfmt handler once, instead
    # of a second time in hypercorn's own format.
    hc.errorlog = logging.getLogger("hypercorn.error")
    # A GET PKIOperation carries the whole request in the query: certmonger sends several kB.
    hc.h11_max_incomplete_size = config.max_message_bytes * 2
    hc.graceful_timeout = 10
    return hc


def metrics_hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{config.metrics.host}:{config.metrics.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 2
    return hc


async def handle_signals(
    config: Config,
    site: Site,
    shutdown: trio.Event,
    notifier: Notifier,
    on_reload: Callable[[], None] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM/SIGINT: graceful shutdown. SIGHUP: reload profiles and endpoint chains."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                if site.rebuild is None or not isinstance(site.services, dict):
                    continue
                notifier.reloading()
                config = await reload_config(config, site.services, site.rebuild)
                if on_reload is not None:
                    on_reload()
                notifier.ready()
            elif not shutdown.is_set():
                event(log, logging.INFO, "shutdown_requested", signal=signal.Signals(signum).name)
                notifier.stopping()
                shutdown.set()


async def serve(
    config: Config,
    *,
    port: int | None = None,
    shutdown: trio.Event | None = None,
    signals: bool = False,
    on_metrics: Callable[[list[str]], None] | None = None,
    serving_fd: int | None = None,
    control_fd: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or `shutdown` is set (or, with `signals`, SIGTERM); reports the bound URLs on start.

    On shutdown hypercorn stops accepting and gives requests in flight
    `graceful_timeout` seconds; then the background loops are cancelled and
    `open_site` closes the token sessions and the store.

    With `config.processes` above 1 this is the primary: it binds one socket
    per process and starts the serving processes (scepd.serving), which call
    this with `serving_fd` (their inherited socket) and `control_fd` (their
    end of the socketpair to the primary).
    """
    primary = serving_fd is None
    notifier = Notifier.from_environment() if primary else Notifier(None)
    shutdown = shutdown if shutdown is not None else trio.Event()
    sockets: list[socket.socket] = []
    if primary and config.processes > 1:
        if serving.METRICS_DIR_ENV not in os.environ:  # `scepd serve` sets it; a caller of serve() may not
            event(log, logging.WARNING, "metrics_primary_only", reason=f"{serving.METRICS_DIR_ENV} is not set")
        sockets = serving.listening_sockets(
            config.listen_host, config.listen_port if port is None else port, config.processes
        )
    try:
        async with open_site(config, primary=primary) as site, trio.open_nursery() as nursery:
            others = serving.ServingProcesses(config.path, sockets[1:]) if sockets else None
            if signals:
                await nursery.start(
                    handle_signals, config, site, shutdown, notifier, others.reload if others is not None else None
                )
            for task in site.background:
                await nursery.start(task)
            if config.metrics.enabled and primary:
                metrics_app = create_metrics_app(site.readiness, site.refresh_metrics)
                metrics_config = metrics_hypercorn_config(config)
                try:
                    metrics_binds = await nursery.start(
                        partial(
                            hypercorn_serve,
                            metrics_app,
                            metrics_config,
                            shutdown_trigger=shutdown.wait,
                        )
                    )
                except Exception as e:  # hypercorn raises it inside its own nursery
                    if (bind_error := first_leaf(e, OSError)) is None:
                        raise
                    raise ListenError("metrics", metrics_config.bind[0], bind_error) from e
                if on_metrics is not None:
                    on_metrics(metrics_binds)

            fd = serving_fd if serving_fd is not None else (os.dup(sockets[0].fileno()) if sockets else None)

            async def scep(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                await hypercorn_serve(
                    create_app(site),
                    hypercorn_config(config, port=port, fd=fd),
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
                # hypercorn has drained its connections: the background loops go with it.
                nursery.cancel_scope.cancel()

            try:
                binds = await nursery.start(scep)
            except Exception as e:
                if (bind_error := first_leaf(e, OSError)) is None:
                    raise
                raise ListenError("SCEP", hypercorn_config(config, port=port, fd=fd).bind[0], bind_error) from e
            if control_fd is not None:
                control = trio.socket.from_stdlib_socket(socket.socket(fileno=control_fd))
                await serving.report_ready(control)
                nursery.start_soon(serving.wait_for_primary, control, shutdown)
            if others is not None:
                await nursery.start(others.run)

                async def stop_others() -> None:
                    await shutdown.wait()
                    others.stop()

                nursery.start_soon(stop_others)
            interval = watchdog_interval()
            if notifier.enabled and interval is not None and site.readiness is not None:
                readiness = site.readiness
                # A PostgreSQL server that is down or unreachable is not a fault of this process, and a
                # restart cannot mend it: the new process could not even open the store, so clients would
                # get refused connections instead of 503s. The watchdog then watches the token alone.
                watched = ("token",) if config.store_url is not None else ("token", "store")

                async def healthy() -> bool:
                    return all(r.ok for r in await readiness.run(watched))

                await nursery.start(watchdog, notifier, interval, healthy)
            processes = f" in {config.processes} processes" if others is not None else ""
            # READY=1 does not wait for the store: a PostgreSQL store opened while its database was
            # unreachable is already serving (503s, an honest /readyz), and waiting would only let the
            # unit's TimeoutStartSec kill a process that a restart cannot help. /readyz is the store's word.
            notifier.ready(f"serving SCEP at {', '.join(binds)}{processes}")
            task_status.started(binds)
    finally:
        for sock in sockets:
            sock.close()
        if not shutdown.is_set():
            notifier.stopping()
        notifier.close()
