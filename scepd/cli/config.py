"""`scepd config check`: validate the file, and the key layout on the token when it can be opened."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from scepd.cli.common import Subparsers, WithConfig, load_config
from scepd.logs import event_text

if TYPE_CHECKING:
    from scepd.config import Config


def cmd_config_check(args: argparse.Namespace) -> int:
    from scepd.cli import tpm as cli_tpm

    config = load_config(args)
    # A TPM token cannot hold some keys: refused here, not found at the first use.
    problems = cli_tpm.config_problems(config)
    if problems:
        raise SystemExit("scepd: " + "; ".join(problems))
    print(f"{config.path}: ok ({len(config.endpoints)} endpoint(s), {len(config.profiles)} profile(s))")
    warnings, skipped = _key_warnings(config)
    for warning in warnings:
        print(f"scepd: warning: {warning}")
    if skipped:
        print(f"scepd: note: the token was not opened, so the key layout was checked from the file only ({skipped})")
    return 0


def _key_warnings(config: Config) -> tuple[list[str], str | None]:
    """The start-up key-layout warnings, and why the token-side ones could not be checked, if so.

    The token may well be out of reach here (a `credential:` PIN outside the
    systemd unit); the file is still valid, so that is a note, not a failure.
    """
    import trio

    from scepd.config import key_layout_warnings
    from scepd.keys.pkcs11.pool import TokenPool
    from scepd.wiring import key_warnings, load_ca, token_config

    async def check() -> list[str]:
        async with TokenPool.open(replace(token_config(config), workers=0)) as pool:
            try:
                ca = load_ca(config, pool)
            except ValueError as e:  # keys and certificates that do not fit: the daemon would not start
                return [event_text("ca_not_usable", reason=str(e))]
            return await key_warnings(config, ca)

    try:
        return trio.run(check), None
    except Exception as e:  # noqa: BLE001 - the file is valid; what the token says is extra
        return key_layout_warnings(config), f"{type(e).__name__}: {e}"


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="sub", required=True)
    with_config(cfg.add_parser("check", help="validate the configuration file")).set_defaults(func=cmd_config_check)
