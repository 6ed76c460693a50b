"""`scepd challenge mint`: one-time challenges, stored hashed."""

from __future__ import annotations

import argparse
import datetime as dt

from scepd.cli.common import Subparsers, WithConfig, load_config
from scepd.clock import utc_now


def cmd_challenge_mint(args: argparse.Namespace) -> int:
    import trio

    from scepd.challenge.onetime import mint_challenge
    from scepd.store.backends import open_store

    config = load_config(args)
    ttl = dt.timedelta(minutes=args.ttl_minutes) if args.ttl_minutes else config.onetime_ttl

    async def mint() -> str:
        async with open_store(config.store_location) as store:
            return await mint_challenge(store, utc_now(), ttl, args.note)

    print(trio.run(mint))
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    ch = sub.add_parser("challenge", help="one-time challenges").add_subparsers(dest="sub", required=True)
    sp = with_config(ch.add_parser("mint", help="print a new single-use challenge (stored only hashed)"))
    sp.add_argument("--ttl-minutes", type=int)
    sp.add_argument("--note", default="")
    sp.set_defaults(func=cmd_challenge_mint)
