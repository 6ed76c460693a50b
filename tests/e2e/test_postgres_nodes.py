"""Two scepd daemons (two "nodes": separate state directories, the same CA) sharing one PostgreSQL
database through `[store] url`, enrolling at the same time over real HTTP. Groundwork for the shared
store (docs/postgres-status.md): what this proves is that issuance, serials and the CRL state hold with
two writers. Which node runs the background loops is tested in test_postgres_leader.py."""

from __future__ import annotations

from pathlib import Path

import trio

from scepd.scep.constants import PkiStatus
from scepd.store.postgres import PostgresStore
from tests.support.daemon import init_state, running
from tests.support.scep_client import connected

CHALLENGE = "pg-nodes-challenge-5Rk"
PER_NODE = 6


async def test_two_daemons_on_one_database_issue_without_collisions(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url
    states = [tmp_path / "node-a", tmp_path / "node-b"]
    for state in states:
        init_state(state, CHALLENGE, store_url=url)
    with running(states[0], CHALLENGE) as a, running(states[1], CHALLENGE) as b:
        serials: list[int] = []

        async def enroll_on(base_url: str, node: str) -> None:
            async with connected(base_url) as client:
                for i in range(PER_NODE):
                    rep, _ = await client.enroll(f"{node}-{i}", CHALLENGE)
                    assert rep.status is PkiStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
                    serials.append(rep.certificates[0].serial_number)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(enroll_on, a.url, "a")
            nursery.start_soon(enroll_on, b.url, "b")

        assert len(set(serials)) == 2 * PER_NODE
        async with PostgresStore.open(url) as store:
            stored = await store.list_certificates(limit=100)
            assert sorted(c.serial for c in stored) == sorted(serials)
            assert {c.subject.split(",")[0] for c in stored} >= {f"CN=a-{i}" for i in range(PER_NODE)}
            with trio.fail_after(30):  # the leading node signs a CRL at start-up and keeps it in the store
                while await store.latest_crl() is None:
                    await trio.sleep(0.1)
        assert a.alive() and b.alive()
    for daemon in (a, b):
        assert "Traceback" not in daemon.log(), daemon.log()
        assert "event=store_fault" not in daemon.log(), daemon.log()
