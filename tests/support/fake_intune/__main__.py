"""Command line for the fake: serve it for the README demo, and drive a running one.

    python -m tests.support.fake_intune serve --port 8081 --tenant T --client-id C --client-secret-file F
    python -m tests.support.fake_intune mint --url http://127.0.0.1:8081 --subject "CN=device1" [--san dns:x] [--ttl 600]
    python -m tests.support.fake_intune revoke --url http://127.0.0.1:8081 --serial HEX [--issuer DN] [--ca-configuration S]
    python -m tests.support.fake_intune revoke --url http://127.0.0.1:8081 --transaction-id TID
    python -m tests.support.fake_intune calls --url http://127.0.0.1:8081 [--route validate] [--json]
    python -m tests.support.fake_intune notifications|revocation-results|reset --url http://127.0.0.1:8081
    python -m tests.support.fake_intune fail --url http://127.0.0.1:8081 --route validate --status 500 [--times N]

The driving commands talk to the admin API (/_fake/...), so they work against a
fake served by another process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography import x509

from tests.support.fake_intune.server import serve_fake_intune
from tests.support.fake_intune.state import FakeIntune
from tests.support.fake_intune.wire import ROUTES

SECRET_FIELDS = {"client_secret", "client_assertion", "authorization"}


def _redact(value: Any) -> Any:
    """Calls are printed without the secrets and tokens they carried."""
    if isinstance(value, dict):
        return {k: "<redacted>" if k.lower() in SECRET_FIELDS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


async def _serve(fake: FakeIntune, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        base = await nursery.start(serve_fake_intune, fake, args.host, args.port)
        secret_source = f"file:{Path(args.client_secret_file).resolve()}" if args.client_secret_file else None
        snippet = fake.config_snippet(secret_source or "file:/path/to/client-secret")
        if secret_source is None:
            snippet = snippet.replace(
                'client_secret = "file:/path/to/client-secret"\n',
                'client_certificate = "/path/to/client-cert.pem"\nclient_key = "pkcs11:token=...;object=..."\n',
            )
        print(f"fake Intune serving at {base}", flush=True)
        print(f"  token endpoint   {fake.token_url}")
        print(f"  Graph discovery  {base}/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints")
        print(f"  ScepActions      {fake.scep_service_url}")
        print(f"  PKI connector    {fake.pki_service_url}")
        print(f"  admin API        {base}/_fake/info")
        print("\nscepd configuration:\n")
        print(snippet, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def cmd_serve(args: argparse.Namespace) -> int:
    secret = None
    if args.client_secret_file:
        secret = Path(args.client_secret_file).read_text().strip()
        if not secret:
            sys.exit(f"{args.client_secret_file} is empty")
    certificates = [x509.load_pem_x509_certificate(Path(p).read_bytes()) for p in args.client_certificate]
    if secret is None and not certificates:
        sys.exit("give --client-secret-file or --client-certificate")
    fake = FakeIntune(
        tenant=args.tenant, client_id=args.client_id, client_secret=secret, client_certificates=certificates
    )
    if args.token_lifetime is not None:
        fake.set_token_lifetime(args.token_lifetime)
    try:
        trio.run(_serve, fake, args)
    except* OSError as group:
        sys.exit(f"cannot serve on {args.host}:{args.port}: {group.exceptions[0]}")
    return 0


def _admin(args: argparse.Namespace, method: str, path: str, body: Any = None, params: Any = None) -> Any:
    response = httpx.request(method, args.url.rstrip("/") + path, json=body, params=params, timeout=10)
    if response.status_code != 200:
        sys.exit(f"{method} {path}: HTTP {response.status_code} {response.text}")
    return response.json()


def cmd_mint(args: argparse.Namespace) -> int:
    body = {"subject": args.subject, "sans": args.san, "ttl": args.ttl, "targeted": not args.untargeted}
    if args.force_code:
        body["forceCode"] = args.force_code
    print(_admin(args, "POST", "/_fake/challenges", body)["challenge"])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.transaction_id:
        body: dict[str, Any] = {"transactionId": args.transaction_id}
    elif args.serial:
        body = {"serialNumber": args.serial, "issuerName": args.issuer, "caConfiguration": args.ca_configuration}
    else:
        sys.exit("give --serial or --transaction-id")
    print(_admin(args, "POST", "/_fake/revocations", body)["requestContext"])
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    calls = _redact(_admin(args, "GET", "/_fake/calls", params={"route": args.route} if args.route else None))
    if args.json:
        print(json.dumps(calls, indent=2))
        return 0
    for call in calls:
        status = call["status"] if call["status"] is not None else "dropped"
        fault = f" [fault {call['fault']}]" if call["fault"] else ""
        print(f"{call['time']:.3f} {call['route']:<10} {call['method']} {call['path']} -> {status}{fault}")
        if call["body"] is not None:
            print("    " + json.dumps(call["body"])[:400])
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    print(json.dumps(_admin(args, "GET", f"/_fake/{args.command}"), indent=2))
    return 0


def cmd_fail(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"route": args.route, "times": args.times, "delay": args.delay}
    if args.status is not None:
        body["status"] = args.status
    if args.drop:
        body["drop"] = args.drop
    print(json.dumps(_admin(args, "POST", "/_fake/faults", body)))
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    _admin(args, "POST", "/_fake/reset", {})
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.support.fake_intune", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the fake until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    serve.add_argument("--tenant", default="contoso.onmicrosoft.com")
    serve.add_argument("--client-id", default="11111111-2222-3333-4444-555555555555")
    serve.add_argument("--client-secret-file", help="file holding the app's client secret")
    serve.add_argument(
        "--client-certificate", action="append", default=[], help="PEM certificate credential (repeatable)"
    )
    serve.add_argument("--token-lifetime", type=int, help="expires_in of issued tokens (default 3599)")
    serve.set_defaults(func=cmd_serve)

    def driving(name: str, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help)
        command.add_argument("--url", default="http://127.0.0.1:8081", help="the fake's base URL")
        return command

    mint = driving("mint", "mint a challenge and print it")
    mint.add_argument("--subject", required=True, help='expected subject, RFC 4514 ("CN=device1,O=Contoso")')
    mint.add_argument(
        "--san", action="append", default=[], help="expected SAN kind:value (dns, email, uri, ip, upn); repeatable"
    )
    mint.add_argument("--ttl", type=float, default=3600, help="seconds until the challenge expires")
    mint.add_argument("--untargeted", action="store_true", help="the profile is no longer targeted")
    mint.add_argument("--force-code", help="validateRequest answers this code")
    mint.set_defaults(func=cmd_mint)

    revoke = driving("revoke", "queue a revocation request and print its requestContext")
    revoke.add_argument("--serial", help="certificate serial number (hex)")
    revoke.add_argument("--issuer", help="issuerName")
    revoke.add_argument("--ca-configuration", help="caConfiguration")
    revoke.add_argument("--transaction-id", help="revoke what this transaction's success notification reported")
    revoke.set_defaults(func=cmd_revoke)

    calls = driving("calls", "print recorded calls (secrets redacted)")
    calls.add_argument("--route", choices=[*ROUTES, "unknown"])
    calls.add_argument("--json", action="store_true")
    calls.set_defaults(func=cmd_calls)

    for name in ("notifications", "revocation-results", "revocations", "challenges"):
        driving(name, f"print {name} as JSON").set_defaults(func=cmd_dump)

    fail = driving("fail", "inject a fault")
    fail.add_argument("--route", required=True, choices=ROUTES)
    fail.add_argument("--status", type=int)
    fail.add_argument("--times", type=int, default=1)
    fail.add_argument("--delay", type=float, default=0.0)
    fail.add_argument("--drop", choices=["reset", "close"])
    fail.set_defaults(func=cmd_fail)

    driving("reset", "forget challenges, revocations, recordings and faults").set_defaults(func=cmd_reset)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
