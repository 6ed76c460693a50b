"""The serving layout `scepd init` writes when not told one: one serving process per core, one token
worker process each (the layout that measured fastest, docs/benchmarks.md), and a daemon started from
that config enrolls through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from cryptography import x509

from scepd.cli.init import serving_layout
from scepd.config import load
from scepd.scep.constants import PkiStatus
from tests.support.daemon import running, scepd
from tests.support.scep_client import connected

CHALLENGE = "default-layout-challenge"


@pytest.mark.parametrize(("cores", "processes"), [(1, 1), (2, 2), (8, 8), (200, 64)])
def test_one_serving_process_per_core_each_with_one_token_worker(cores: int, processes: int) -> None:
    layout = serving_layout(cores)
    assert (layout.processes, layout.token_workers) == (processes, 1)  # 64: server.processes' upper bound


def test_init_writes_the_layout_for_this_machine_and_the_daemon_enrolls_with_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    scepd("init", "--state", str(state), "--listen", "127.0.0.1:0", "--challenge", CHALLENGE, "--key-size", "2048")
    config = load(state / "scepd.toml")
    expected = serving_layout(os.cpu_count() or 1)
    assert (config.processes, config.token.workers) == (expected.processes, expected.token_workers)
    ca = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    assert ca.public_key().key_size == 2048  # --key-size reached the CA

    async def enroll(url: str) -> None:
        async with connected(url) as client:
            rep, _ = await client.enroll("default-layout", CHALLENGE)
            assert rep.status is PkiStatus.SUCCESS

    with running(state, CHALLENGE) as daemon:
        trio.run(enroll, daemon.url)
