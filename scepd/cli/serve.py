"""`scepd serve`: run the daemon (scepd.server), and the serving processes beside the primary."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from scepd.cli.common import Subparsers, WithConfig, load_config

if TYPE_CHECKING:
    from scepd.config import Config


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args)  # first: a bad file ends the command before the server's imports (a second)

    import trio

    from scepd import serving
    from scepd.config import read_secret

    if args.listen:
        host, _, port = args.listen.rpartition(":")
        config = replace(config, listen_host=host, listen_port=int(port))
    if args.serving_fd is not None:
        return _serve_beside_primary(config, args.serving_fd, args.control_fd)
    if config.processes > 1 and serving.METRICS_DIR_ENV not in os.environ:
        serving.reexec_for_metrics(args.argv)  # does not return
    from scepd.server import serve  # after the re-exec: the process that execs does not need it (a second)

    async def main() -> None:
        def on_metrics(binds: list[str]) -> None:
            for bind in binds:
                print(f"scepd: serving metrics at {bind}/metrics (health: {bind}/readyz)", flush=True)

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, config, signals=True, on_metrics=on_metrics))
            for bind in binds:
                for ep in config.endpoints:
                    print(f"scepd: serving SCEP at {bind}{ep.path} (challenge: {ep.challenge})", flush=True)
            if config.static_challenge_source and args.show_challenge:
                secret = read_secret(config.static_challenge_source)
                print(f"scepd: static challenge password: {secret}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    finally:
        serving.remove_metrics_directory()
    return 0


def _serve_beside_primary(config: Config, serving_fd: int, control_fd: int | None) -> int:
    import trio

    from scepd.server import serve

    try:
        trio.run(partial(serve, config, signals=True, serving_fd=serving_fd, control_fd=control_fd))
    except KeyboardInterrupt:
        pass
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    sp = with_config(sub.add_parser("serve", help="run the daemon"))
    sp.add_argument("--listen", help="HOST:PORT, overriding server.listen")
    sp.add_argument("--show-challenge", action="store_true", help="print the static challenge (development only)")
    # Internal: how the primary starts the serving processes beside it (server.processes).
    sp.add_argument("--serving-fd", type=int, help=argparse.SUPPRESS)
    sp.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_serve)
