"""CrlPublisher: on demand, on schedule, on revocations made by another process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.ca.publisher import CrlPublisher
from scepd.keys.base import HashName, Signer
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.pool import TokenPool, generate_key
from scepd.store.base import CertificateRecord, CertStatus, StoreError
from scepd.store.sqlite import SqliteStore
from tests.support.ca import NOW, WrappedKey, make_ca

LIFETIME = dt.timedelta(hours=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


class SlowKey(WrappedKey):
    """Signs after a pause and records how many signatures ran at once."""

    def __init__(self, inner: Signer) -> None:
        super().__init__(inner)
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
        serial=serial,
        transaction_id=f"tx-{serial}",
        subject=f"CN=device-{serial}",
        requester="CN=x",
        csr_sha256="cd" * 32,
        profile="default",
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=30),
        issued_at=NOW,
        status=CertStatus.VALID,
        der=b"\x30\x00",
    )


@pytest.fixture
async def ca(ec_ca_key: Signer) -> CertificateAuthority:
    return await make_ca(ec_ca_key)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "scepd.sqlite3") as s:
        for serial in (1, 2, 3):
            await s.put_issued(record(serial))
        yield s


class CountingStore:
    """The real store, counting the publisher's reads, so a test waits for checks to have happened
    instead of for time to have passed."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.reads = {"revocation_state": 0, "latest_crl": 0}

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def revocation_state(self) -> object:
        self.reads["revocation_state"] += 1
        return await self._store.revocation_state()

    async def latest_crl(self) -> bytes | None:
        self.reads["latest_crl"] += 1
        return await self._store.latest_crl()


async def reads_pass(store: CountingStore, what: str = "revocation_state", n: int = 3) -> None:
    """Until `n` more `what` reads have been made (for a publisher's loop: n - 1 whole rounds at least)."""
    target = store.reads[what] + n
    with trio.fail_after(5):
        while store.reads[what] < target:
            await trio.sleep(0.005)


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


async def test_regenerations_never_overlap(store: SqliteStore, ec_ca_key: Signer) -> None:
    key = SlowKey(ec_ca_key)
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
    counting = CountingStore(store)
    publisher = CrlPublisher(ca, counting, lifetime=LIFETIME, check_interval=0.02, clock=FakeClock())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        await wait_for_number(publisher, 1)  # signed just after started(), beside the serving daemon
        await reads_pass(counting)
        assert publisher.current.number == 1  # checked, nothing changed, nothing re-signed

        # `scepd cert revoke` opens its own connection to the same file.
        async with SqliteStore.open(tmp_path / "scepd.sqlite3") as cli:
            await cli.revoke(3, "superseded", NOW)
        await wait_for_number(publisher, 2)
        assert serials(publisher) == [3]
        await reads_pass(counting)
        assert publisher.current.number == 2
        nursery.cancel_scope.cancel()


async def test_run_resigns_half_way_through_the_lifetime(ca: CertificateAuthority, store: SqliteStore) -> None:
    clock = FakeClock()
    counting = CountingStore(store)
    publisher = CrlPublisher(ca, counting, lifetime=LIFETIME, check_interval=0.02, clock=clock)  # type: ignore[arg-type]
    with trio.move_on_after(10) as scope:  # cancellation ends the loop cleanly
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await wait_for_number(publisher, 1)
            clock.now = NOW + LIFETIME / 2 - dt.timedelta(seconds=1)
            await reads_pass(counting)  # checks made a second before the CRL falls due
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
    counting = CountingStore(store)
    publisher = CrlPublisher(ca, counting, check_interval=0.02)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="scepd.crl"):
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await wait_for_number(publisher, 1)
            await store.close()  # every store call now raises StoreError
            await reads_pass(counting)  # checks that failed
            assert publisher.current is not None and publisher.current.number == 1  # still served
            nursery.cancel_scope.cancel()
    assert "crl_refresh_failed" in caplog.text


async def test_a_follower_serves_the_stored_crl_and_picks_up_newer_ones(
    ca: CertificateAuthority, store: SqliteStore
) -> None:
    """A serving process beside the primary (server.processes): it never signs while the store has a CRL."""
    primary = CrlPublisher(ca, store, lifetime=LIFETIME, clock=FakeClock())
    signed = await primary.get()
    follower = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.follow)
        assert follower.current is not None and follower.current.der == signed.der
        assert (follower.current.number, follower.current.revoked, follower.current.next_update) == (
            signed.number,
            0,
            signed.next_update,
        )
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
    counting = CountingStore(store)
    follower = CrlPublisher(ca, counting, lifetime=LIFETIME, check_interval=1.0)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.follow)
        # Start-up's look and the loop's first look found none (counted from before the start: the
        # loop's first look may come before this task runs again, and its second one signs).
        with trio.fail_after(5):
            while counting.reads["latest_crl"] < 2:
                await trio.sleep(0.005)
        assert follower.current is None  # the primary gets a check interval to store its first one
        await wait_for_number(follower, 1)
        nursery.cancel_scope.cancel()
    assert follower.current is not None and await store.latest_crl() == follower.current.der


class GatedKey(WrappedKey):
    """Signs only once `gate` is set: a CRL build that takes as long as the test wants."""

    def __init__(self, inner: Signer) -> None:
        super().__init__(inner)
        self.gate = trio.Event()
        self.gate.set()  # open while the CA certificate is made
        self.waiting = trio.Event()

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        if not self.gate.is_set():
            self.waiting.set()
        await self.gate.wait()
        return await super().sign(data, hash)


async def test_run_serves_the_stored_crl_while_it_signs_a_new_one(store: SqliteStore, ec_ca_key: Signer) -> None:
    """A large store takes a while to list: start-up must not wait for it (issue 14)."""
    key = GatedKey(ec_ca_key)
    ca = await make_ca(key)
    old = await CrlPublisher(ca, store, lifetime=LIFETIME, clock=FakeClock()).get()
    key.gate = trio.Event()
    await store.revoke(2, "superseded", NOW)
    publisher = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.02, clock=FakeClock())
    async with trio.open_nursery() as nursery:
        with trio.fail_after(2):
            await nursery.start(publisher.run)
        assert publisher.current is not None and publisher.current.der == old.der  # served at once
        await key.waiting.wait()
        assert publisher.current.der == old.der  # while the new one is being signed
        key.gate.set()
        await wait_for_number(publisher, old.number + 1)
        assert serials(publisher) == [2]
        nursery.cancel_scope.cancel()


async def test_a_crl_stored_by_another_ca_is_not_served(
    ca: CertificateAuthority, store: SqliteStore, rsa_ca_key: Signer
) -> None:
    other = await make_ca(rsa_ca_key, "another CA")
    foreign = await CrlPublisher(other, store, lifetime=LIFETIME).get()
    publisher = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.02)
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        assert publisher.current is None or publisher.current.der != foreign.der
        crl = await publisher.get()
        assert x509.load_der_x509_crl(crl.der).issuer == ca.certificate.subject
        nursery.cancel_scope.cancel()


async def test_certificates_expired_for_a_crl_lifetime_leave_the_crl(ca: CertificateAuthority, tmp_path: Path) -> None:
    """RFC 5280 5.1.2.6: an entry may go once it was on a scheduled CRL issued after the expiry."""
    clock = FakeClock()
    async with SqliteStore.open(tmp_path / "expiry.sqlite3") as store:
        for serial, not_after in ((1, NOW - 2 * LIFETIME), (2, NOW - LIFETIME / 2), (3, NOW + LIFETIME)):
            await store.put_issued(dataclasses.replace(record(serial), not_after=not_after))
            await store.revoke(serial, "superseded", NOW - 3 * LIFETIME)
        publisher = CrlPublisher(ca, store, lifetime=LIFETIME, clock=clock)
        await publisher.refresh()
        assert sorted(serials(publisher)) == [2, 3]  # 2 expired less than a lifetime ago: still listed
        clock.now = NOW + LIFETIME
        await publisher.refresh()
        assert serials(publisher) == [3]


class FlakyStore:
    """The real store, whose revocation reads fail while `broken` is set (the store side of the loop)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.broken = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def revocation_state(self) -> object:
        if self.broken:
            raise StoreError("database is locked")
        return await self._store.revocation_state()


def _failures(cause: str) -> float:
    return metrics.CRL_REFRESH_FAILURES.labels(cause)._value.get()


async def test_a_store_fault_episode_is_logged_once_counted_and_retried_with_backoff(
    ca: CertificateAuthority, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(store)
    publisher = CrlPublisher(ca, flaky, lifetime=LIFETIME, check_interval=0.01, clock=FakeClock())  # type: ignore[arg-type]
    before = _failures("store")
    with caplog.at_level(logging.INFO, logger="scepd.crl"):
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await wait_for_number(publisher, 1)
            flaky.broken = True
            broken_at = trio.current_time()
            with trio.fail_after(10):
                while _failures("store") - before < 5:
                    await trio.sleep(0.001)
            # Pauses of 0.01, 0.02, 0.04 and 0.08 s between the five failures, not 0.01 each.
            assert trio.current_time() - broken_at >= 0.15
            flaky.broken = False
            await store.revoke(1, "superseded", NOW)
            with trio.fail_after(5):
                while serials(publisher) != [1]:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    warnings = [
        r for r in caplog.records if "event=crl_refresh_failed" in r.getMessage() and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "cause=store" in warnings[0].getMessage()
    assert "event=crl_refresh_recovered" in caplog.text


async def test_a_token_fault_on_the_real_token_does_not_end_the_loop(
    token_config: Callable[..., TokenConfig], store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The CA key on SoftHSM2 behind a worker process that dies: the refresh fails, the loop goes on,
    the next attempt gets a fresh worker and signs."""
    cfg = token_config(1)
    label = f"crl-fault-{uuid.uuid4().hex[:8]}"
    generate_key(cfg, label, "ec", curve="P-256")
    before = _failures("token")
    async with TokenPool.open(cfg) as pool:
        ca = await make_ca(pool.key(label))
        publisher = CrlPublisher(ca, store, lifetime=LIFETIME, check_interval=0.02, clock=FakeClock())
        with caplog.at_level(logging.INFO, logger="scepd.crl"):
            async with trio.open_nursery() as nursery:
                await nursery.start(publisher.run)
                await wait_for_number(publisher, 1)
                pool._workers[0]._proc.kill()
                await store.revoke(3, "keyCompromise", NOW)
                # The new CRL is served before the loop logs its recovery (it still stores the CRL).
                with trio.fail_after(10):
                    while serials(publisher) != [3] or "event=crl_refresh_recovered" not in caplog.text:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    assert _failures("token") - before >= 1
    assert "event=crl_refresh_failed cause=token" in caplog.text
    assert "event=crl_refresh_recovered" in caplog.text
    assert x509.load_der_x509_crl(publisher.current.der).is_signature_valid(  # type: ignore[union-attr]
        ca.certificate.public_key()
    )  # type: ignore[arg-type]
