"""`scepd pending ...`: the operator's side of manual approval.

A profile with `approval = true` holds each request; these commands list the
held requests and approve or reject them, in the store beside the running
daemon. The daemon issues an approved request when the client polls next
(CertPoll), so nothing here touches the token.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from scepd.cli.common import Subparsers, WithConfig, load_config, time_text
from scepd.clock import utc_now
from scepd.logs import audit
from scepd.store.base import PendingRecord, PendingStatus

if TYPE_CHECKING:
    from scepd.store.roles import PendingRequests

# trio, cryptography and the store are imported by the commands that use them (building the parser stays cheap).

T = TypeVar("T")


def _with_store(args: argparse.Namespace, work: Callable[[PendingRequests], Awaitable[T]]) -> T:
    import trio

    from scepd.store.backends import open_store

    config = load_config(args)

    async def run() -> T:
        async with open_store(config.store_location) as store:
            # Requests past their time are shown, and refused, as expired.
            await store.expire_pending(utc_now())
            return await work(store)

    return trio.run(run)


def cmd_pending_list(args: argparse.Namespace) -> int:
    status = None if args.all else PendingStatus(args.status)
    records = _with_store(args, lambda store: store.list_pending(status, args.limit))
    print(f"{'ID':>6} {'STATUS':<9} {'RECEIVED':<20} {'EXPIRES':<20} {'PROFILE':<12} SUBJECT")
    for r in records:
        print(
            f"{r.id:>6} {r.status.value:<9} {time_text(r.received_at):<20} {time_text(r.expires_at):<20} "
            f"{r.profile:<12} {r.subject}"
        )
    return 0


def _describe(r: PendingRecord) -> None:
    from cryptography import x509

    csr = x509.load_der_x509_csr(r.csr_der)
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ", ".join(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        sans = None
    key = csr.public_key()
    fields = [
        ("id", str(r.id)),
        ("status", r.status.value),
        ("subject", r.subject),
        ("san", sans),
        ("key", f"{type(key).__name__.removesuffix('PublicKey').lstrip('_')} {getattr(key, 'key_size', '')}".strip()),
        ("transaction id", r.transaction_id),
        ("endpoint", r.endpoint),
        ("profile", r.profile),
        ("challenge", r.challenge_mode),
        ("request", r.message_type),
        ("renewal of", f"{r.renewal_of:x}" if r.renewal_of is not None else None),
        ("received at", time_text(r.received_at)),
        ("expires at", time_text(r.expires_at)),
        ("decided at", time_text(r.decided_at) if r.decided_at else None),
        ("reason", r.reason or None),
        ("serial", f"{r.serial:x}" if r.serial is not None else None),
    ]
    for name, value in fields:
        if value is not None:
            print(f"{name + ':':<16}{value}")


def cmd_pending_show(args: argparse.Namespace) -> int:
    record = _with_store(args, lambda store: store.get_pending(args.id))
    if record is None:
        print(f"scepd: no held request with id {args.id}")
        return 1
    _describe(record)
    return 0


def _decide(args: argparse.Namespace, approve: bool) -> int:
    async def decide(store: PendingRequests) -> tuple[PendingRecord | None, PendingRecord | None]:
        return await store.decide_pending(args.id, approve, args.reason, utc_now()), await store.get_pending(args.id)

    decided, current = _with_store(args, decide)
    if decided is None:
        state = f"it is {current.status.value}" if current is not None else "there is no such request"
        print(f"scepd: request {args.id} cannot be {'approved' if approve else 'rejected'}: {state}")
        return 1
    audit(
        "approved" if approve else "rejected",
        request=decided.id,
        transaction_id=decided.transaction_id,
        subject=decided.subject,
        profile=decided.profile,
        reason=args.reason or "-",
        source="cli",
    )
    verb = "approved" if approve else "rejected"
    print(
        f"request {decided.id} ({decided.subject}) {verb}; the client gets "
        f"{'its certificate' if approve else 'FAILURE'} at its next poll"
    )
    return 0


def cmd_pending_approve(args: argparse.Namespace) -> int:
    return _decide(args, True)


def cmd_pending_reject(args: argparse.Namespace) -> int:
    return _decide(args, False)


def add_commands(sub: Subparsers, with_config: WithConfig) -> None:
    pending = sub.add_parser("pending", help="requests held for manual approval: list, show, approve, reject")
    ps = pending.add_subparsers(dest="sub", required=True)
    sp = with_config(ps.add_parser("list", help="held requests, newest first (waiting ones unless --status/--all)"))
    sp.add_argument("--status", default="pending", choices=[s.value for s in PendingStatus])
    sp.add_argument("--all", action="store_true", help="every held request, whatever its status")
    sp.add_argument("--limit", type=int, default=100)
    sp.set_defaults(func=cmd_pending_list)
    for name, func, text in (
        ("show", cmd_pending_show, "one held request: subject, SANs, key, profile, times"),
        ("approve", cmd_pending_approve, "approve: the client's next poll gets the certificate"),
        ("reject", cmd_pending_reject, "reject: the client's next poll gets FAILURE (badRequest)"),
    ):
        sp = with_config(ps.add_parser(name, help=text))
        sp.add_argument("id", type=int, help="the request's id (scepd pending list)")
        if name != "show":
            sp.add_argument("--reason", default="", help="a note for the audit trail (sent to the client on reject)")
        sp.set_defaults(func=func)
