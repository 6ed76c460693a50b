"""`scepd store copy`: move an appliance's SQLite store into an empty PostgreSQL database.

The work is in scepd/store/copy.py; this reads the command line, names the
source (the configuration's `[store] path`, or `--from`), prints the
summary and leaves an audit line. docs/storage.md ("Moving to PostgreSQL")
gives the steps around it: stop the daemon first, since anything it issues
after the copy's snapshot would not be in the new database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scepd.cli.common import Subparsers, WithConfig, load_config
from scepd.logs import audit


def _target_url(text: str) -> str:
    """The `--to` URL, held to the rules of `[store] url`: a password on a command line is refused too."""
    from scepd.config import ConfigError, check_store_url

    try:
        check_store_url(text, "--to")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(e.reason) from None
    return text


def _source(args: argparse.Namespace) -> Path:
    if args.source is not None:
        return Path(args.source)
    config = load_config(args)
    if config.store_path is None:
        # A usage error (exit 2): nothing to copy from in this configuration.
        raise ValueError(
            f"{args.config} already names a PostgreSQL store ([store] url); name the SQLite file with --from"
        )
    return config.store_path


def cmd_store_copy(args: argparse.Namespace) -> int:
    from scepd.store.copy import copy_store
    from scepd.store.postgres.connection import describe

    source = _source(args)
    target = describe(args.to)
    print(f"copying {source} into {target}", flush=True)
    report = copy_store(source, args.to)
    print(f"{'TABLE':<22} {'SOURCE':>10} {'TARGET':>10}")
    for table, rows in report.source.rows.items():
        print(f"{table:<22} {rows:>10} {report.target.rows[table]:>10}")
        if table == "certificates":  # then by status, indented under them
            for status, n in sorted(report.source.statuses.items()):
                print(f"{'  ' + status:<22} {n:>10} {report.target.statuses.get(status, 0):>10}")
    print(f"{'crl number':<22} {report.source.crl_number:>10} {report.target.crl_number:>10}")
    print(f"copied and checked: the next CRL on {target} is numbered {report.crl_number + 1} or higher")
    audit(
        "store_copied",
        source=str(source),
        target=target,
        certificates=report.target.rows["certificates"],
        crl_number=report.crl_number,
    )
    return 0


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    st = sub.add_parser("store", help="the store itself").add_subparsers(dest="sub", required=True)
    sp = with_config(
        st.add_parser(
            "copy",
            help="copy the SQLite store into an empty PostgreSQL database (stop the daemon first)",
            description="Copy every row of the SQLite store (the configuration's [store] path, or --from) into"
            " an empty PostgreSQL database, in one transaction, and check the counts. Stop the daemon first:"
            " what it writes after the copy's snapshot is not copied.",
        )
    )
    sp.add_argument("--to", required=True, type=_target_url, metavar="URL", help="postgresql://user@host/db")
    sp.add_argument("--from", dest="source", metavar="PATH", help="the SQLite file (default: [store] path)")
    sp.set_defaults(func=cmd_store_copy)
