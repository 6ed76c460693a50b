"""scepd/nodekeys.py: the key fingerprint on a real SoftHSM2 token (copies of one `scepd init` state, one whose
rejection secret was made again, one with another CA), and the watch comparing nodes over a real store."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from scepd import metrics
from scepd.keys.rejection import prf_input
from scepd.nodekeys import CHECK_CONTEXT, SESSION, Fingerprint, NodeKeysWatch
from scepd.store.sqlite import SqliteStore
from tests.support.daemon import REPO, init_state

# Run in a process of its own per state directory: SoftHSM2 reads SOFTHSM2_CONF once per process.
_PRINT = """
import sys, trio
from pathlib import Path
from scepd.config import load
from scepd.keys.pkcs11.pool import TokenPool
from scepd.nodekeys import fingerprint
from scepd.wiring import key_label, load_ca, token_config

config = load(Path(sys.argv[1]))
tc = token_config(config)
if sys.argv[2] == "regenerate":  # replace the RA key's rejection secret with a new one, as a wrong copy would have
    from pkcs11 import ObjectClass
    from scepd.keys.pkcs11.pool import _on_token, ensure_reject_secret
    label = key_label(config.ca.ra_key)
    _on_token(tc, lambda s: s._find(ObjectClass.SECRET_KEY, label + ".reject").destroy())
    assert ensure_reject_secret(tc, label)

async def main():
    async with TokenPool.open(tc) as pool:
        print((await fingerprint(load_ca(config, pool))).text())

trio.run(main)
"""


def fingerprint_of(state: Path, action: str = "") -> Fingerprint:
    done = subprocess.run(
        [sys.executable, "-c", _PRINT, str(state / "scepd.toml"), action or "-"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed = Fingerprint.parse(done.stdout.strip())
    assert parsed is not None, done.stdout
    return parsed


def test_the_check_context_is_never_a_rejection_input() -> None:
    assert not CHECK_CONTEXT.startswith(prf_input(b"", 0)[:28])
    assert prf_input(b"", 0)[:28] == b"scepd implicit rejection v1\0"


def test_copies_of_one_token_agree_and_another_secret_or_ca_differs(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        init_state(tmp_path / name, "challenge-nk", workers=1)  # a worker process opens the token
    init_state(tmp_path / "lone", "challenge-nk", no_ra=True)
    a, b = fingerprint_of(tmp_path / "a"), fingerprint_of(tmp_path / "b")
    assert a == b and a.reject != SESSION and a.ca != a.ra
    assert fingerprint_of(tmp_path / "a") == a  # stable across processes

    regenerated = fingerprint_of(tmp_path / "c", "regenerate")
    assert a.differs(regenerated) == ["reject"]
    assert fingerprint_of(tmp_path / "c") == regenerated  # the new secret persists on that copy

    lone = fingerprint_of(tmp_path / "lone")
    assert lone.ca == lone.ra  # no RA: the CA opens the envelopes
    assert a.differs(lone) == ["ca", "ra", "reject"]


def fp(ca: str = "c" * 64, ra: str = "r" * 64, reject: str = "s" * 64) -> Fingerprint:
    return Fingerprint(ca=ca, ra=ra, reject=reject)


def test_the_record_round_trips_and_an_unreadable_one_differs_in_every_part() -> None:
    assert Fingerprint.parse(fp().text()) == fp()
    assert Fingerprint.parse(fp(reject=SESSION).text()) == fp(reject=SESSION)
    assert Fingerprint.parse("v2 something else") is None
    assert fp().differs(None) == ["ca", "ra", "reject"]
    assert fp().differs(fp(ra="x" * 64)) == ["ra"]
    assert fp(reject=SESSION).differs(fp()) == ["reject"]


async def test_the_watch_reports_another_node_once_and_its_return_to_agreement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)]
    caplog.set_level(logging.INFO, logger="scepd.nodekeys")

    async def same() -> Fingerprint:
        return fp()

    async def other_ca() -> Fingerprint:
        return fp(ca="d" * 64)

    async with SqliteStore.open(tmp_path / "s.db") as store:
        a = NodeKeysWatch(store, "node-a", same, lease=3.0, clock=lambda: clock[0])
        b = NodeKeysWatch(store, "node-b", same, lease=3.0, clock=lambda: clock[0])
        bad = NodeKeysWatch(store, "node-x", other_ca, lease=3.0, clock=lambda: clock[0])
        await a.check()
        await b.check()
        await a.check()
        assert metrics.NODE_KEYS_DIFFER._value.get() == 0
        assert "node_keys_differ" not in caplog.text

        await bad.check()
        await a.check()
        assert metrics.NODE_KEYS_DIFFER._value.get() == 1
        await a.check()  # nothing changed: not logged again
        lines = [r.getMessage() for r in caplog.records if "node_keys_differ" in r.getMessage()]
        assert len(lines) == 2, lines  # node-x about a and b, a about node-x: one line each
        assert "nodes=node-x" in lines[1] and "differ=node-x:ca" in lines[1] and "CA key" in lines[1]
        assert "node-a" in lines[0] and "node-b" in lines[0]

        # node-x stops; two leases later its row no longer counts.
        clock[0] += dt.timedelta(seconds=6.5)
        await a.check()
        assert metrics.NODE_KEYS_DIFFER._value.get() == 0
        assert "event=node_keys_agree node=node-a" in caplog.text


async def test_a_store_fault_is_retried_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def same() -> Fingerprint:
        return fp()

    store = await SqliteStore.connect(tmp_path / "s.db")
    await store.close()  # every call now raises StoreError (closed)
    watch = NodeKeysWatch(store, "node-a", same, lease=0.3)
    with trio.move_on_after(0.35):
        await watch.run()
    assert "event=background_fault" in caplog.text and "loop=node_keys" in caplog.text
