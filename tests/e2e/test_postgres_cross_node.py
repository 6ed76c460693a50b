"""One device's flow spread over two scepd nodes on one PostgreSQL database (docs/nodes.md: "Any node can
answer any request"). Node A and node B are separate state directories with the same CA, each `scepd serve`
with `[store] url` on one fresh database; every step of a flow goes to the node the test names, over HTTP,
and the CLI runs with the config of the node named. What must hold is what one node guarantees: one
certificate per held request, one renewal per certificate, one enrollment per one-time challenge, and a
revocation on the CRL whichever node serves it."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scepd.scep.client import CertRep, issuer_and_serial
from scepd.scep.constants import FailInfo, MessageType, PkiStatus
from tests.e2e.conftest import CHALLENGE
from tests.e2e.test_approval import Requester, pending, request_id
from tests.e2e.test_postgres_leader import crl_lists, leads, wait
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.postgres import PostgresServer
from tests.support.scep_client import Client, connected, make_csr, rsa_key

LEASE = 2.0  # seconds: the follower tries to claim, and reads the stored CRL, often

ENDPOINTS = """
[endpoints.held]
path = "/held"
challenge = "static"
profile = "held"

[endpoints.onetime]
path = "/onetime"
challenge = "onetime"
profile = "default"

[profiles.held]
approval = true
"""


@dataclass
class Nodes:
    a: Daemon
    b: Daemon
    url: str  # the database both use

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]

    def certificates(self, cn: str) -> list[tuple[object, ...]]:
        """(serial, status, renewal_of) of every certificate issued to `cn`, oldest first."""
        return self.rows(
            "SELECT serial, status, renewal_of FROM certificates WHERE subject = %s ORDER BY id", f"CN={cn}"
        )


def node_state(root: Path, name: str, url: str) -> Path:
    state = root / name
    init_state(state, CHALLENGE, extra_toml=ENDPOINTS, store_url=url)
    config = state / "scepd.toml"
    text = config.read_text()
    text = text.replace("[server]\n", f'[server]\nnode_name = "{name}"\nleader_lease_seconds = {LEASE}\n', 1)
    text = text.replace('file = "ca.crl"\n', 'file = "ca.crl"\ncheck_interval_seconds = 0.3\n', 1)
    config.write_text(text)
    return state


@pytest.fixture(scope="module")
def nodes(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Both nodes for the whole module: the flows use distinct subjects, so they do not disturb each other."""
    name = postgres.create_database()
    url = postgres.url(name)
    root = tmp_path_factory.mktemp("cross-node")
    with (
        running(node_state(root, "node-a", url), CHALLENGE) as a,
        running(node_state(root, "node-b", url), CHALLENGE) as b,
    ):
        yield Nodes(a, b, url)
    for daemon in (a, b):
        assert "Traceback" not in daemon.log(), daemon.log()
        assert "event=store_fault" not in daemon.log(), daemon.log()
    postgres.drop_database(name)


async def client_of(daemon: Daemon, path: str, http: httpx.AsyncClient) -> Client:
    client = Client(daemon.base_url + path, http)
    await client.get_ca_cert()
    return client


def issued(rep: CertRep, cn: str) -> x509.Certificate:
    assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
    assert len(rep.certificates) == 1
    cert: x509.Certificate = rep.certificates[0]
    assert cert.subject == x509.Name.from_rfc4514_string(f"CN={cn}")
    return cert


async def together(requests: dict[str, tuple[Client, bytes, rsa.RSAPrivateKey]]) -> dict[str, CertRep]:
    """Send already built PKIMessages at the same moment (each on its node); the answers by name."""
    answers: dict[str, CertRep] = {}
    go = trio.Event()

    async def send(name: str, client: Client, body: bytes, key: rsa.RSAPrivateKey) -> None:
        await go.wait()
        answers[name] = await client.send(body, key)

    async with trio.open_nursery() as nursery:
        for name, (client, body, key) in requests.items():
            nursery.start_soon(send, name, client, body, key)
        await trio.sleep(0.05)
        go.set()
    return answers


async def mint(daemons: list[Daemon]) -> list[str]:
    """One `scepd challenge mint` per daemon, each with that daemon's config, run side by side."""
    minted: dict[int, str] = {}

    async def one(i: int, daemon: Daemon) -> None:
        done = await trio.to_thread.run_sync(lambda: scepd("challenge", "mint", "-c", str(daemon.config)))
        minted[i] = done.stdout.strip()

    async with trio.open_nursery() as nursery:
        for i, daemon in enumerate(daemons):
            nursery.start_soon(one, i, daemon)
    return [minted[i] for i in range(len(daemons))]


async def test_a_request_held_on_a_is_approved_with_bs_config_and_collected_on_b(nodes: Nodes) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        on_a, on_b = await client_of(nodes.a, "/held", http), await client_of(nodes.b, "/held", http)
        device = Requester(on_a, "held-across")
        assert (await device.request()).status is PkiStatus.PENDING
        device.client = on_b
        assert (await device.poll()).status is PkiStatus.PENDING  # B knows the request A held
        assert nodes.certificates(device.cn) == []

        approved = pending(nodes.b, "approve", str(request_id(nodes.b, device.cn)), "--reason", "cross-node")
        assert "approved" in approved.stdout

        cert = issued(await device.poll(), device.cn)  # collected on B
        assert cert.public_key() == device.key.public_key()
        assert nodes.certificates(device.cn) == [(f"{cert.serial_number:x}", "valid", None)]

        # A lost reply: polling A now, and resending the PKCSReq to A, give the same certificate, not a second.
        device.client = on_a
        assert issued(await device.poll(), device.cn).serial_number == cert.serial_number
        assert issued(await device.request(), device.cn).serial_number == cert.serial_number
        assert len(nodes.certificates(device.cn)) == 1
        held = nodes.rows(
            "SELECT status, serial FROM pending_requests WHERE transaction_id = %s", device.transaction_id
        )
        assert held == [("issued", f"{cert.serial_number:x}")]


async def test_a_certificate_from_a_is_renewed_through_b_once(nodes: Nodes) -> None:
    cn = "renewed-across"
    async with connected(nodes.a.url) as on_a, connected(nodes.b.url) as on_b:
        rep, old_key = await on_a.enroll(cn, CHALLENGE)
        old = issued(rep, cn)

        # GetCert on B for A's certificate: B finds it in the shared store.
        fetch = on_b.message(
            make_csr(old_key, cn, None),
            old_key,
            message_type=MessageType.GET_CERT,
            payload=issuer_and_serial(old.issuer, old.serial_number),
        )
        assert (await on_b.send(fetch, old_key)).certificates == [old]

        # RenewalReq signed with the old key and certificate, no challenge, through B.
        new_key = rsa_key(fresh=True)
        csr = make_csr(new_key, cn, None)
        tid = secrets.token_hex(16)
        renewal = on_b.message(csr, old_key, signer=old, message_type=MessageType.RENEWAL_REQ, transaction_id=tid)
        new = issued(await on_b.send(renewal, old_key), cn)
        assert new.public_key() == new_key.public_key()
        old_hex, new_hex = f"{old.serial_number:x}", f"{new.serial_number:x}"
        assert nodes.certificates(cn) == [(old_hex, "superseded", None), (new_hex, "valid", old_hex)]

        # The single-node rule (scepd/challenge/renewal.py): a certificate is renewed once; another renewal
        # of it is refused with badCertId, but a retry of the renewal that went through (same transactionID
        # and CSR) gets the same new certificate. Both asked of A, which did not do the renewal.
        retry = on_a.message(csr, old_key, signer=old, message_type=MessageType.RENEWAL_REQ, transaction_id=tid)
        assert issued(await on_a.send(retry, old_key), cn) == new
        other = on_a.message(make_csr(rsa_key(), cn, None), old_key, signer=old, message_type=MessageType.RENEWAL_REQ)
        refused = await on_a.send(other, old_key)
        assert (refused.status, refused.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_CERT_ID), refused
        assert nodes.certificates(cn) == [(old_hex, "superseded", None), (new_hex, "valid", old_hex)]


async def test_two_renewals_of_one_certificate_at_once_on_a_and_b_issue_one(nodes: Nodes) -> None:
    """One node serialises renewals of a certificate with a lock in its process; two nodes must not both
    renew it either: one new certificate, the other request refused as a second renewal (badCertId).
    Before the fix in SupersedeRenewed both got a certificate (seen in the first round)."""
    for round in range(3):
        cn = f"renewed-twice-{round}"
        async with connected(nodes.a.url) as on_a, connected(nodes.b.url) as on_b:
            rep, old_key = await on_a.enroll(cn, CHALLENGE)
            old = issued(rep, cn)
            bodies = {
                name: client.message(
                    make_csr(rsa_key(), cn, None), old_key, signer=old, message_type=MessageType.RENEWAL_REQ
                )
                for name, client in (("a", on_a), ("b", on_b))
            }
            answers = await together({"a": (on_a, bodies["a"], old_key), "b": (on_b, bodies["b"], old_key)})
        outcomes = sorted(((rep.status, rep.fail_info) for rep in answers.values()), key=str)
        assert outcomes == sorted([(PkiStatus.SUCCESS, None), (PkiStatus.FAILURE, FailInfo.BAD_CERT_ID)], key=str), (
            round,
            {name: (rep.status, rep.fail_info, rep.fail_info_text) for name, rep in answers.items()},
        )
        new = next(issued(rep, cn) for rep in answers.values() if rep.status is PkiStatus.SUCCESS)
        old_hex, new_hex = f"{old.serial_number:x}", f"{new.serial_number:x}"
        # The losing node may have signed and recorded a certificate before it lost: then it is revoked.
        rows = nodes.certificates(cn)
        assert rows[:1] == [(old_hex, "superseded", None)] and (new_hex, "valid", old_hex) in rows, rows
        for serial, status, renewal_of in rows[1:]:
            if serial != new_hex:
                assert (status, renewal_of) == ("revoked", old_hex), rows
                unsent = [
                    line for line in (nodes.a.log() + nodes.b.log()).splitlines() if "audit=not_delivered" in line
                ]
                assert any(f"serial={serial} " in line for line in unsent), unsent


async def test_a_one_time_challenge_minted_on_a_is_spent_once_by_a_race_between_a_and_b(nodes: Nodes) -> None:
    minted = await mint([nodes.a, nodes.a, nodes.a, nodes.a, nodes.b])
    for round, challenge in enumerate(minted[:3]):
        async with connected(nodes.a.base_url + "/onetime") as on_a, connected(nodes.b.base_url + "/onetime") as on_b:
            # Both envelopes are built first, so the two requests leave together.
            keys = {"a": rsa_key(), "b": rsa_key()}
            bodies = {
                "a": on_a.message(make_csr(keys["a"], f"onetime-{round}-a", challenge), keys["a"]),
                "b": on_b.message(make_csr(keys["b"], f"onetime-{round}-b", challenge), keys["b"]),
            }
            answers = await together({"a": (on_a, bodies["a"], keys["a"]), "b": (on_b, bodies["b"], keys["b"])})
            replies = {name: (rep.status, rep.fail_info) for name, rep in answers.items()}

        assert sorted(replies.values(), key=str) == sorted(
            [(PkiStatus.SUCCESS, None), (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)], key=str
        ), replies
        winner = next(name for name, (status, _) in replies.items() if status is PkiStatus.SUCCESS)
        assert len(nodes.certificates(f"onetime-{round}-{winner}")) == 1
        assert nodes.certificates(f"onetime-{round}-{'b' if winner == 'a' else 'a'}") == []

    # One at a time, so a node that could not see the challenge at all would show: minted with A's config,
    # spent on B, then refused on A; minted with B's config, spent on A, refused on B.
    for challenge, spent_on, refused_on in ((minted[3], nodes.b, nodes.a), (minted[4], nodes.a, nodes.b)):
        async with (
            connected(spent_on.base_url + "/onetime") as first,
            connected(refused_on.base_url + "/onetime") as then,
        ):
            spent, _ = await first.enroll("onetime-spent", challenge)
            issued(spent, "onetime-spent")
            rep, _ = await then.enroll("onetime-spent-again", challenge)
            assert (rep.status, rep.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST), rep
    assert nodes.rows("SELECT count(*) FROM challenges WHERE used_at IS NOT NULL") == [(5,)]
    assert len(nodes.certificates("onetime-spent")) == 2 and nodes.certificates("onetime-spent-again") == []


async def test_a_revocation_through_as_cli_is_on_the_crl_both_nodes_serve(nodes: Nodes) -> None:
    cn = "revoked-across"
    async with connected(nodes.b.url) as on_b:
        rep, _ = await on_b.enroll(cn, CHALLENGE)
        cert = issued(rep, cn)
    with trio.fail_after(10):
        while not (leads(nodes.a) or leads(nodes.b)):
            await trio.sleep(0.05)
    follower = nodes.b if leads(nodes.a) else nodes.a
    assert not leads(follower)
    scepd("cert", "revoke", f"{cert.serial_number:x}", "--reason", "keyCompromise", "-c", str(nodes.a.config))
    assert nodes.certificates(cn) == [(f"{cert.serial_number:x}", "revoked", None)]
    # The follower signs nothing: it serves the CRL the leader stored, over HTTP and by GetCRL.
    await trio.to_thread.run_sync(
        lambda: wait(
            lambda: crl_lists(nodes.a, cert.serial_number) and crl_lists(nodes.b, cert.serial_number),
            timeout=15,
            what="the revocation on both nodes' CRLs",
        )
    )
    async with connected(follower.url) as client:
        key = rsa_key()
        ask = client.message(
            make_csr(key, "crl-reader", None),
            key,
            message_type=MessageType.GET_CRL,
            payload=issuer_and_serial(cert.issuer, cert.serial_number),
        )
        got = await client.send(ask, key)
    assert got.status is PkiStatus.SUCCESS and len(got.crls) == 1
    entry = x509.load_der_x509_crl(got.crls[0]).get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc <= dt.datetime.now(dt.UTC)
    assert "event=crl_published" not in follower.log(), follower.log()
