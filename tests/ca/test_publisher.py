"""CrlPublisher: on demand, on schedule, on revocations made by another process."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scepd.ca.authority import CertificateAuthority
from scepd.ca.publisher import CrlPublisher
from scepd.keys.base import HashName
from scepd.keys.software import SoftwareKey
from scepd.store.base import CertificateRecord, CertStatus
from scepd.store.sqlite import SqliteStore
from tests.ca.conftest import NOW, make_ca

LIFETIME = dt.timedelta(hours=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


class SlowKey(SoftwareKey):
    """Signs after a pause and records how many signatures ran at once."""

    def __init__(self) -> None:
        super().__init__(ec.generate_private_key(ec.SECP256R1()))
        self.running = 0
        self.most = 0

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await trio.sleep(0.01)
            return await super().sign(data, hash)
        finally:
            self.running -= 1


def record(serial: int) -> CertificateRecord:
    return CertificateRecord(
        serial=serial, transaction_id=f"tx-{serial}", subject=f"CN=device-{serial}", requester="CN=x",
        csr_sha256="cd" * 32, profile="default", not_before=NOW, not_after=NOW + dt.timedelta(days=30),
        issued_at=NOW, status=CertStatus.VALID, der=b"\x30\x00",
    )


@pytest.fixture
async def ca() -> CertificateAuthority:
    return await make_ca(SoftwareKey(ec.generate_private_key(ec.SECP256R1())))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.sqlite3") as s:
        for serial in (1, 2, 3):
            await s.put_issued(record(serial))
        yield s


def serials(publisher: CrlPublisher) -> list[int]:
    assert publisher.current is not None
    return [e.serial_number for e in x509.load_der_x509_crl(publisher.current.der)]


async def test_refresh_numbers_and_atomic_file(ca: CertificateAuthority, store: SqliteStore, tmp_path: Path) -> None:
    file = tmp_path / "ca.crl"
    clock = FakeClock()
    publisher = CrlPublisher(ca, store, lifetime=LIFETIME, file=file, clock=clock)
    assert publisher.current is None
    first = await publisher.get()
    assert first.number == 1 and first.this_update == NOW and first.next_update == NOW + LIFETIME
    assert file.read_bytes() == first.der
    assert await publisher.get() is first  # no re-signing just to read

    await store.revoke(2, "keyCompromise", NOW)
    await publisher.refresh()
    assert publisher.current is not None and publisher.current.number == 2
    assert serials(publisher) == [2]
    assert file.read_bytes() == publisher.current.der
    assert sorted(p.name for p in tmp_path.iterdir() if "crl" in p.name) == ["ca.crl"]  # no temp file left

    # A restart (a new publisher on the same store) continues the numbering.
    assert (await CrlPublisher(ca, store, lifetime=LIFETIME).get()).number == 3


async def test_pem_file_and_write_failure(
    ca: CertificateAuthority, store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem = tmp_path / "ca.crl.pem"
    crl = await CrlPublisher(ca, store, file=pem).get()
    assert x509.load_pem_x509_crl(pem.read_bytes()).public_bytes(serialization.Encoding.DER) == crl.der

    missing = tmp_path / "no-such-dir" / "ca.crl"
    with caplog.at_level(logging.WARNING, logger="scepd.crl"):
        crl = await CrlPublisher(ca, store, file=missing).get()
    assert crl.number == 2  # still published in memory
    assert "crl_file_write_failed" in caplog.text


async def test_regenerations_never_overlap(store: SqliteStore) -> None:
    key = SlowKey()
    publisher = CrlPublisher(await make_ca(key), store)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(publisher.refresh)
    assert key.most == 1
    assert publisher.current is not None and publisher.current.number == 5


async def wait_for_number(publisher: CrlPublisher, number: int) -> None:
    with trio.fail_after(5):
        while publisher.current is None or publisher.current.number < number:
            await trio.sleep(0.01)


async def test_run_follows_revocations_made_by_another_process(
    ca: CertificateAuthority, store: SqliteStore, tmp_path: Path
) -> None:
    publisher = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.02, clock=FakeClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        assert publisher.current is not None and publisher.current.number == 1  # published before started()
        await trio.sleep(0.1)
        assert publisher.current.number == 1  # nothing changed, nothing re-signed

        # `scepd cert revoke` opens its own connection to the same file.
        async with SqliteStore.open(tmp_path / "scepd.sqlite3") as cli:
            await cli.revoke(3, "superseded", NOW)
        await wait_for_number(publisher, 2)
        assert serials(publisher) == [3]
        await trio.sleep(0.1)
        assert publisher.current.number == 2
        nursery.cancel_scope.cancel()


async def test_run_resigns_half_way_through_the_lifetime(ca: CertificateAuthority, store: SqliteStore) -> None:
    clock = FakeClock()
    publisher = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.02, clock=clock)
    with trio.move_on_after(10) as scope:  # cancellation ends the loop cleanly
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            clock.now = NOW + LIFETIME / 2 - dt.timedelta(seconds=1)
            await trio.sleep(0.1)
            assert publisher.current is not None and publisher.current.number == 1
            clock.now = NOW + LIFETIME / 2
            await wait_for_number(publisher, 2)
            assert publisher.current.this_update == clock.now
            assert publisher.current.next_update == clock.now + LIFETIME
            scope.cancel()
    assert scope.cancelled_caught


async def test_run_survives_a_store_fault(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteStore.connect(tmp_path / "faulty.sqlite3")
    publisher = CrlPublisher(ca, store, check_interval=0.02)
    with caplog.at_level(logging.WARNING, logger="scepd.crl"):
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await store.close()  # every store call now raises StoreError
            await trio.sleep(0.1)
            assert publisher.current is not None and publisher.current.number == 1  # still served
            nursery.cancel_scope.cancel()
    assert "crl_refresh_failed" in caplog.text


async def test_a_follower_serves_the_stored_crl_and_picks_up_newer_ones(
    ca: CertificateAuthority, store: SqliteStore
) -> None:
    """A serving process beside the primary (server.processes): it never signs while the store has a CRL."""
    primary = CrlPublisher(ca, store, lifetime=LIFETIME)
    signed = await primary.get()
    follower = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.follow)
        assert follower.current is not None and follower.current.der == signed.der
        assert (follower.current.number, follower.current.revoked, follower.current.next_update) == (
            signed.number, 0, signed.next_update)
        await store.revoke(3, "superseded", NOW)
        await primary.refresh()
        with trio.fail_after(5):
            while follower.current.number != signed.number + 1:
                await trio.sleep(0.01)
        assert serials(follower) == [3]
        nursery.cancel_scope.cancel()
    # An older CRL is never stored over a newer one, whoever writes last.
    await store.save_crl(signed.number, signed.der)
    assert await store.latest_crl() == primary.current.der  # type: ignore[union-attr]


async def test_a_follower_signs_only_when_the_store_has_no_crl(ca: CertificateAuthority, store: SqliteStore) -> None:
    assert await store.latest_crl() is None
    follower = CrlPublisher(ca, store, lifetime=LIFETIME)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.follow)
        nursery.cancel_scope.cancel()
    assert follower.current is not None and await store.latest_crl() == follower.current.der
