"""`scepd intune ...`: check the Intune connection, create its credential, read the ledger, sync revocations."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from scepd.cli.common import Subparsers, WithConfig, load_config, parse_subject
from scepd.clock import utc_now
from scepd.errors import leaves

# trio, the config, the token and the Intune client are imported by the commands that use them: building the
# parser (every `scepd` start) stays cheap.


def _intune_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every `scepd intune ...` command ends an error with one line naming the cause, never a
    traceback (unless --log-level debug, which logs it): the operator reads it in a terminal."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from scepd.config import ConfigError
        from scepd.intune.errors import IntuneError

        try:
            return int(command(args))
        except (SystemExit, KeyboardInterrupt, ConfigError):
            raise
        except BaseException as e:  # noqa: BLE001 - reported in one line below
            cause = leaves(e)[0]
            logging.getLogger("scepd.cli").debug("intune command failed", exc_info=True)
            detail = str(cause).splitlines()[0] if str(cause) else ""
            if isinstance(cause, IntuneError):
                text = f"Intune: {detail}" + (f" (client-request-id {cause.request_id})" if cause.request_id else "")
            else:
                text = f"{type(cause).__name__}: {detail}".rstrip(": ")
            print(f"scepd: intune {args.sub}: {text}", file=sys.stderr)
            return 1

    return run


def _with_intune(args: argparse.Namespace, work):  # type: ignore[no-untyped-def]
    """Run `work(client, store, ca_subject, intune_config)` with the daemon's Intune client, token and store."""
    import trio

    from scepd.keys.pkcs11.pool import TokenPool
    from scepd.store.backends import open_store
    from scepd.wiring import intune_client, intune_http, load_ca, token_config

    config = load_config(args)
    if config.intune is None:
        raise SystemExit("scepd: the configuration has no [intune] table")
    settings = config.intune

    async def main():  # type: ignore[no-untyped-def]
        async with (
            TokenPool.open(token_config(config)) as pool,
            open_store(config.store_location) as store,
            intune_http(settings) as http,
        ):
            ca = load_ca(config, pool)
            issuer = ca.certificate.subject.rfc4514_string()
            return await work(intune_client(settings, pool, http), store, issuer, settings)

    return trio.run(main)


@_intune_errors
def cmd_intune_check(args: argparse.Namespace) -> int:
    async def check(client, store, issuer, settings):  # type: ignore[no-untyped-def]
        findings = await client.diagnose()
        for f in findings:
            print(f"{'ok    ' if f.ok else 'FAILED'} {f.what}: {f.detail}")
        required = [f for f in findings if not f.ok and "PkiConnectorFEService" not in f.what]
        if required or not any(f.what.startswith("Intune scep_challenge_provider") for f in findings):
            print("scepd: intune check: Intune is not usable (see the FAILED lines)", file=sys.stderr)
            return 1
        return 0

    return int(_with_intune(args, check))


@_intune_errors
def cmd_intune_credential(args: argparse.Namespace) -> int:
    import trio

    from scepd.intune.credential import create_app_credential
    from scepd.wiring import token_config

    config = load_config(args)
    cert = trio.run(
        create_app_credential,
        token_config(config),
        args.label,
        parse_subject(args.subject),
        Path(args.out),
        dt.timedelta(days=args.days),
        utc_now(),
    )
    print(
        f"key {args.label!r} generated on the token; certificate {cert.subject.rfc4514_string()} written to "
        f"{args.out}\nupload it to the Entra app registration, then set in [intune]:\n"
        f'client_certificate = "{Path(args.out).resolve()}"\n'
        f'client_key = "pkcs11:token={config.token.label};object={args.label};type=private"'
    )
    return 0


@_intune_errors
def cmd_intune_notifications(args: argparse.Namespace) -> int:
    import trio

    from scepd.store.backends import open_store

    config = load_config(args)

    async def listing() -> None:
        async with open_store(config.store_location) as store:
            for n in await store.notifications(args.transaction, args.limit):
                serial = f"{n.serial:x}" if n.serial is not None else "-"
                state = "delivered" if n.delivered else "NOT-DELIVERED"
                print(
                    f"{n.at.isoformat()} {n.kind.value:<7} {state:<13} serial={serial} "
                    f"transaction_id={n.transaction_id} detail={n.detail}"
                )

    trio.run(listing)
    return 0


@_intune_errors
def cmd_intune_sync(args: argparse.Namespace) -> int:
    from scepd.intune.revocation import RevocationSync

    async def sync(client, store, issuer, settings):  # type: ignore[no-untyped-def]
        report = await RevocationSync(
            client, store, issuer_name=settings.revocation_issuer_name or issuer, batch=settings.revocation_batch
        ).sync_once()
        print(f"downloaded={report.downloaded} revoked={report.revoked} uploaded={report.uploaded}")
        return 0

    return int(_with_intune(args, sync))


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    it = sub.add_parser("intune", help="Microsoft Intune integration").add_subparsers(dest="sub", required=True)
    sp = with_config(it.add_parser("check", help="get Entra tokens and discover the Intune services"))
    sp.set_defaults(func=cmd_intune_check)
    sp = with_config(it.add_parser("credential", help="generate the Entra app's key on the token and its certificate"))
    sp.add_argument("--label", default="scepd-intune", help="token object label for the key")
    sp.add_argument("--subject", default="CN=scepd Intune connector")
    sp.add_argument("--days", type=int, default=730)
    sp.add_argument("--out", required=True, help="where to write the certificate (PEM) to upload to Entra")
    sp.set_defaults(func=cmd_intune_credential)
    sp = with_config(it.add_parser("notifications", help="what Intune was told about issued certificates"))
    sp.add_argument("--transaction", help="only this SCEP transactionID")
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(func=cmd_intune_notifications)
    sp = with_config(
        it.add_parser("sync", help="pull Intune's revocation requests now (the daemon also does it on a timer)")
    )
    sp.set_defaults(func=cmd_intune_sync)
