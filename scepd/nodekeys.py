"""Whether the nodes sharing one PostgreSQL store serve with the same keys.

Every node must sign with the same CA key, open envelopes with the same RA
key and derive rejected envelopes' substitute keys from the same rejection
secret (docs/nodes.md, "The keys"). A node with another CA issues into the
shared store from a CA the others do not serve; a node with another
rejection secret answers one bad envelope differently from the others while
a good envelope behaves alike everywhere, which is the padding oracle the
secret exists to close. Nothing else notices either, so each node's primary
writes a fingerprint of its keys into the store (`NodeKeys`) every third of
the leader lease, reads the other nodes' recent ones, and says loudly when
one differs: `event=node_keys_differ` once per change, and the gauge
`scepd_node_keys_differ`.

Readiness does not depend on it: a node cannot know which side is right,
and a misconfigured node must not be able to take the good ones out of the
load balancer by disagreeing with them.

The fingerprint has three parts, each a SHA-256 value: the CA certificate's
public key (SPKI DER), the RA's (the CA's when there is no RA), and a check
value of the envelope key's rejection secret, HMAC-SHA256 of a constant
computed on the token (the secret never leaves it). The constant starts
differently from every `rejection.prf_input`, so the check value is never a
substitute key; and only that constant is ever MACed for it, nothing a
stranger chose. A key whose token holds no persistent secret (each session
makes its own, which startup already warns about) has no check value: the
record says `reject=session`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.clock import utc_now
from scepd.episodes import Backoff, keep_running
from scepd.keys.pkcs11.key import Pkcs11Key
from scepd.logs import event
from scepd.store.roles import NodeKeys

log = logging.getLogger("scepd.nodekeys")

# MACed under the rejection secret for its check value. `rejection.prf_input` starts with
# b"scepd implicit rejection v1\0", so no substitute key is ever computed from the same input.
CHECK_CONTEXT = b"scepd node keys v1\0check value"
ANNOUNCES_PER_LEASE = 3  # announce and compare every lease / 3, as often as the leader renews
LIVE_LEASES = 2  # another node's row counts while it was written within this many leases
SESSION = "session"  # the `reject` part of a key without a persistent rejection secret

PARTS = {"ca": "CA key", "ra": "RA key", "reject": "RA key's rejection secret"}


@dataclass(frozen=True)
class Fingerprint:
    """The keys one node serves with, as SHA-256 hex digests (`reject` is SESSION without a stored secret)."""

    ca: str
    ra: str
    reject: str

    def text(self) -> str:
        """The record kept in the store."""
        return f"v1 ca={self.ca} ra={self.ra} reject={self.reject}"

    @classmethod
    def parse(cls, text: str) -> Fingerprint | None:
        """The fingerprint a node wrote; None for a record this version cannot read."""
        version, _, rest = text.partition(" ")
        fields = dict(part.partition("=")[::2] for part in rest.split())
        if version != "v1" or set(fields) != set(PARTS):
            return None
        return cls(ca=fields["ca"], ra=fields["ra"], reject=fields["reject"])

    def differs(self, other: Fingerprint | None) -> list[str]:
        """The parts (of PARTS) in which `other` differs; every part when it cannot be read.

        Two keys without a stored secret count as alike here: their per-session secrets differ
        anyway, and the start-up warning `envelope_key_without_reject_secret` already says so.
        """
        if other is None:
            return list(PARTS)
        return [name for name in PARTS if getattr(self, name) != getattr(other, name)]


def _spki_digest(key: PublicKeyTypes) -> str:
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


async def fingerprint(ca: CertificateAuthority) -> Fingerprint:
    """This process's fingerprint; asks the token for the rejection secret's check value."""
    check = await ca.ra_key.reject_check(CHECK_CONTEXT) if isinstance(ca.ra_key, Pkcs11Key) else None
    return Fingerprint(
        ca=_spki_digest(ca.certificate.public_key()),
        ra=_spki_digest(ca.ra_certificate.public_key()),
        reject=SESSION if check is None else hashlib.sha256(check).hexdigest(),
    )


class NodeKeysWatch:
    """Announce this node's fingerprint and compare it with the other nodes' (a per-node loop of the primary)."""

    def __init__(
        self,
        store: NodeKeys,
        node: str,
        mine: Callable[[], Awaitable[Fingerprint]],
        *,
        lease: float,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.store, self.node, self._compute, self.clock = store, node, mine, clock
        self.interval = lease / ANNOUNCES_PER_LEASE
        self.live = dt.timedelta(seconds=lease * LIVE_LEASES)
        self._mine: Fingerprint | None = None
        self._reported: dict[str, tuple[str, ...]] = {}  # the differences last logged, by node

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now and every third of the lease until cancelled; a fault is retried, never fatal."""
        await keep_running(
            "node_keys",
            self.check,
            interval=self.interval,
            backoff=Backoff(initial=self.interval, maximum=self.interval),
            log=log,
            task_status=task_status,
        )

    async def check(self) -> None:
        """Announce, read the rows of live nodes, and report differences that changed."""
        if self._mine is None:
            self._mine = await self._compute()  # once: the keys do not change while the process runs
        mine = self._mine
        now = self.clock()
        await self.store.announce(self.node, mine.text(), now)
        others = [row for row in await self.store.fingerprints(now - self.live) if row.node != self.node]
        differing: dict[str, tuple[str, ...]] = {}
        for row in others:
            parts = mine.differs(Fingerprint.parse(row.fingerprint))
            if parts:
                differing[row.node] = tuple(parts)
        metrics.NODE_KEYS_DIFFER.set(len(differing))
        if differing == self._reported:
            return
        self._reported = differing
        if differing:
            event(
                log,
                logging.ERROR,
                "node_keys_differ",
                node=self.node,
                nodes=",".join(sorted(differing)),
                differ=";".join(f"{n}:{'+'.join(p)}" for n, p in sorted(differing.items())),
                parts=",".join(PARTS[p] for p in PARTS if any(p in ps for ps in differing.values())),
                remedy="give every node the same token (the same network HSM, or copies of one SoftHSM2 token) "
                "and the same ca.certificate and ca.ra_certificate; stop the node that differs until it has them",
            )
        else:
            event(log, logging.INFO, "node_keys_agree", node=self.node, nodes=len(others))
