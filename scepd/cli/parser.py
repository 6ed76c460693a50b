"""The `scepd` command line: one argparse tree, each command group adding its own commands."""

from __future__ import annotations

import argparse
import os
import sys

from scepd import logs
from scepd.cli import ca, certs, challenge, config, init, intune, pending, serve, store
from scepd.cli.common import DEFAULT_CONFIG


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scepd", description="SCEP CA daemon with keys on a PKCS#11 token.")
    p.add_argument("--log-level", default=os.environ.get("SCEPD_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})")
        return sp

    # In the order `scepd --help` has always listed them.
    for group in (init, serve, config, ca, challenge, intune, certs, pending, store):
        group.add_commands(sub, with_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logs.setup(str(args.log_level).upper())
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure ends in one line and its exit code
        from scepd.cli import errors  # only on failure: it imports the config and the token's errors

        return errors.report(e, debug=str(args.log_level).upper() == "DEBUG")
