"""Nodes on one PostgreSQL database compare their keys (scepd/nodekeys.py): two nodes made from one
`scepd init` agree; a third with another CA is reported by every node, once, and no node stops being ready."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.test_operations import scrape, value
from tests.e2e.test_postgres_leader import wait
from tests.support.daemon import Daemon, init_state, running
from tests.support.postgres import PostgresServer

CHALLENGE = "pg-node-keys-challenge-3Hw"
LEASE = 1.0  # seconds: announcements every LEASE / 3, rows live for 2 leases


def node(tmp_path: Path, name: str, url: str, *, no_ra: bool = False) -> Path:
    state = tmp_path / name
    init_state(state, CHALLENGE, store_url=url, no_ra=no_ra)
    config = state / "scepd.toml"
    text = config.read_text()
    config.write_text(
        text.replace("[server]\n", f'[server]\nnode_name = "{name}"\nleader_lease_seconds = {LEASE}\n', 1)
    )
    return state


def differ(daemon: Daemon) -> float:
    return value(scrape(daemon), "scepd_node_keys_differ")


def reports(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if "event=node_keys_differ" in line]


def test_nodes_with_the_same_keys_agree_and_one_with_another_ca_is_reported_by_all(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.url(postgres.create_database())
    with running(node(tmp_path, "node-a", url), CHALLENGE) as a, running(node(tmp_path, "node-b", url), CHALLENGE) as b:
        time.sleep(LEASE)  # three rounds each, with the other's row present
        assert (differ(a), differ(b)) == (0.0, 0.0)
        assert reports(a) == reports(b) == []

        with running(node(tmp_path, "node-x", url, no_ra=True), CHALLENGE) as x:
            wait(lambda: (differ(a), differ(b), differ(x)) == (1.0, 1.0, 2.0), timeout=10, what="every node to see it")
            time.sleep(LEASE)  # more rounds: nothing new to say
            assert (differ(a), differ(b), differ(x)) == (1.0, 1.0, 2.0)
            for d, others in ((a, "nodes=node-x"), (b, "nodes=node-x"), (x, "nodes=node-a,node-b")):
                lines = reports(d)
                assert len(lines) == 1, lines
                assert others in lines[0] and "CA key" in lines[0] and "remedy=" in lines[0], lines[0]
                # Readiness stays with each node's own token and store: a misconfigured node cannot take the others out.
                assert httpx.get(d.metrics_base + "/readyz", timeout=10).status_code == 200
        for d in (a, b):
            assert "Traceback" not in d.log(), d.log()
