"""Two scepd nodes on one PostgreSQL database with a short leader lease (scepd/leadership.py): one signs
CRLs and runs the other once-per-deployment loops, the other serves what it signed; a leader killed
outright is replaced once its lease runs out, a leader stopped cleanly at once."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trio
from cryptography import x509

from scepd.scep.constants import PkiStatus
from scepd.store.postgres import PostgresStore
from tests.e2e.test_intune import INTUNE_PATH, intune_toml
from tests.e2e.test_operations import scrape, total, value
from tests.support.daemon import Daemon, init_state, running, scepd
from tests.support.fake_intune.server import running_fake_intune
from tests.support.postgres import PostgresServer
from tests.support.scep_client import connected

CHALLENGE = "pg-leader-challenge-7Qz"
LEASE = 2.0  # seconds; renewals and takeover attempts every LEASE / 3
ATTEMPT = LEASE / 3


def node(tmp_path: Path, name: str, url: str, lease: float = LEASE, extra_toml: str = "") -> Path:
    state = tmp_path / name
    init_state(state, CHALLENGE, extra_toml=extra_toml, store_url=url)
    config = state / "scepd.toml"
    text = config.read_text()
    text = text.replace("[server]\n", f'[server]\nnode_name = "{name}"\nleader_lease_seconds = {lease}\n', 1)
    text = text.replace('file = "ca.crl"\n', 'file = "ca.crl"\ncheck_interval_seconds = 0.3\n', 1)
    config.write_text(text)
    return state


def wait(predicate: Callable[[], object], timeout: float = 20, what: str = "") -> float:
    """Poll until `predicate` holds; the monotonic time it was first seen to."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic()


def leads(daemon: Daemon) -> bool:
    """The last leadership event in the log is an acquisition."""
    changes = re.findall(r"event=(leader_acquired|leader_lost)", daemon.log())
    return bool(changes) and changes[-1] == "leader_acquired"


def gauge(daemon: Daemon) -> float:
    return value(scrape(daemon), "scepd_leader")


def crl_lists(daemon: Daemon, serial: int) -> bool:
    crl = x509.load_der_x509_crl(httpx.get(daemon.base_url + "/crl/ca.crl", timeout=10).content)
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def enroll(daemon: Daemon, name: str) -> int:
    async def one() -> int:
        async with connected(daemon.url) as client:
            rep, _ = await client.enroll(name, CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
            return int(rep.certificates[0].serial_number)

    return trio.run(one)


def revoke(daemon: Daemon, serial: int) -> None:
    scepd("cert", "revoke", f"{serial:x}", "--reason", "keyCompromise", "-c", str(daemon.config))


def test_one_node_leads_and_a_killed_leader_is_replaced_when_its_lease_runs_out(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.url(postgres.create_database())
    with running(node(tmp_path, "node-a", url), CHALLENGE) as a:
        wait(lambda: leads(a), what="node-a to lead")
        with running(node(tmp_path, "node-b", url), CHALLENGE) as b:
            time.sleep(LEASE)  # several rounds of claims: b keeps trying, a keeps renewing
            assert leads(a) and "event=leader_acquired" not in b.log(), b.log()
            assert (gauge(a), gauge(b)) == (1.0, 0.0)
            for d in (a, b):  # a follower is a healthy node
                assert httpx.get(d.metrics_base + "/readyz", timeout=10).status_code == 200

            # A certificate from the follower, revoked by the command line with the follower's config:
            # the leader signs the CRL, and both serve it.
            serial = enroll(b, "through-b")
            revoke(b, serial)
            wait(lambda: crl_lists(a, serial) and crl_lists(b, serial), what="the revocation on both CRLs")
            assert "event=crl_published" in a.log()
            assert "event=crl_published" not in b.log(), b.log()  # the follower never signed

            # The leader dies without a word: its lease must run out before the follower takes over.
            a.proc.kill()
            a.proc.wait(10)
            killed = time.monotonic()
            took = wait(lambda: leads(b), timeout=LEASE + 5, what="node-b to lead") - killed
            # Not before the lease could have run out (its last renewal began at most ATTEMPT before the kill),
            # and at the first attempt after it did (with some slack for a loaded machine).
            assert LEASE - ATTEMPT - 0.4 <= took <= LEASE + ATTEMPT + 1.0, took
            wait(lambda: "event=crl_published" in b.log(), timeout=5, what="node-b to sign")
            assert gauge(b) == 1.0
            serial = enroll(b, "after-the-handover")
            revoke(b, serial)
            wait(lambda: crl_lists(b, serial), timeout=10, what="node-b's CRL with the second revocation")
            assert b.alive()
        assert "Traceback" not in b.log(), b.log()
    assert "Traceback" not in a.log(), a.log()


def downloads(daemon: Daemon) -> float:
    """Intune revocation downloads this node made (the sync runs on the leader only)."""
    return total(scrape(daemon), "scepd_intune_calls_total", action="download_revocations")


def test_a_leader_stopped_cleanly_hands_over_at_once(postgres: PostgresServer, tmp_path: Path) -> None:
    """With Intune configured on both nodes, so the revocation sync is seen to run on the leader only."""
    lease = 6.0  # long, so a handover by expiry could not pass for one by release
    name = postgres.create_database()
    url = postgres.url(name)
    with running_fake_intune() as fake:
        secret = tmp_path / "intune-client-secret"
        secret.write_text(fake.client_secret or "")
        intune = intune_toml(fake, secret, interval=0.3)
        with running(node(tmp_path, "node-a", url, lease, intune), CHALLENGE, path=INTUNE_PATH) as a:
            wait(lambda: leads(a), what="node-a to lead")
            with running(node(tmp_path, "node-b", url, lease, intune), CHALLENGE, path=INTUNE_PATH) as b:
                wait(lambda: downloads(a) >= 2, timeout=10, what="node-a's revocation sync")
                time.sleep(lease / 3 + 0.2)
                assert "event=leader_acquired" not in b.log()
                assert downloads(b) == 0  # the follower never polls Intune
                a.proc.terminate()
                assert a.proc.wait(30) == 0
                stopped = time.monotonic()

                async def holders() -> list[str]:
                    async with PostgresStore.open(url) as store:
                        rows = await store.database.run(
                            lambda conn: conn.execute("SELECT holder FROM leases").fetchall()
                        )
                        return [r["holder"] for r in rows]

                # Released on the way out: node-a's row is gone before the process ended.
                assert not [h for h in trio.run(holders) if h.startswith("node-a:")]
                took = wait(lambda: leads(b), timeout=lease + 5, what="node-b to lead") - stopped
                assert took <= lease / 3 + 0.7, took  # its next attempt, not the lease's expiry
                assert "reason=stopping" in a.log()
                wait(lambda: "event=crl_published" in b.log(), timeout=5, what="node-b to sign")
                wait(lambda: downloads(b) >= 1, timeout=10, what="node-b's revocation sync")
            assert "Traceback" not in b.log(), b.log()
        assert "Traceback" not in a.log(), a.log()
    postgres.drop_database(name)
