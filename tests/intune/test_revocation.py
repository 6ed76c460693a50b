"""Revocation sync against the fake Intune over HTTP and a real SQLite store.

Every request a download hands out gets exactly one uploaded result, whatever it
names; the filter is the name sent in success notifications, every such name
(a CA rollover leaves certificates under the old one); and the loop outlives
Intune, store and token faults. The certificates are test data from a software
CA (tests/support/pki.py): nothing here signs.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import trio
from cryptography import x509

from scepd import metrics
from scepd.intune.client import IntuneClient, issuing_authority_name, serial_text
from scepd.intune.revocation import RevocationSync
from scepd.keys.base import KeyBackendError
from scepd.store.base import CertStatus, NotificationKind, NotificationRecord, StoreError
from scepd.store.sqlite import SqliteStore
from tests.support.fake_intune.state import FakeIntune
from tests.support.pki import Ca, key, record_for

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


async def issue(store: SqliteStore, ca: Ca, cn: str, *, legacy: bool = False) -> x509.Certificate:
    """A certificate in the store and its success notification in the ledger; `legacy`
    records it the way scepd did before the ledger kept the issuer name."""
    cert = ca.issue(key().public_key(), cn)
    await store.put_issued(record_for(cert, transaction_id=f"tid-{cn}"))
    issuer = None if legacy else issuing_authority_name(cert)
    await store.record_notification(
        NotificationRecord(f"tid-{cn}", cert.serial_number, NotificationKind.SUCCESS, True, "Success", NOW, issuer)
    )
    return cert


def results(fake: FakeIntune) -> dict[str, list[tuple[bool, str]]]:
    return {k: [(r.succeeded, r.error_code) for r in v] for k, v in fake.revocation_results().items()}


async def status(store: SqliteStore, cert: x509.Certificate) -> CertStatus:
    found = await store.get(cert.serial_number)
    assert found is not None
    return found.status


async def test_long_mixed_queue_across_a_rollover_is_answered_once_each(
    intune: IntuneClient, store: SqliteStore, fake_intune: FakeIntune
) -> None:
    old, new = Ca("scepd CA 2024"), Ca("scepd CA 2025")
    old_name, new_name = issuing_authority_name(old.certificate), issuing_authority_name(new.certificate)
    old_certs = [await issue(store, old, f"old-{n}", legacy=n == 0) for n in range(3)]
    new_certs = [await issue(store, new, f"new-{n}") for n in range(4)]
    known = {fake_intune.queue_revocation(serial_text(c.serial_number), issuer_name=old_name): c for c in old_certs}
    known |= {fake_intune.queue_revocation(serial_text(c.serial_number), issuer_name=new_name): c for c in new_certs}
    unknown = [fake_intune.queue_revocation(f"0BADC0FFEE{n:02X}", issuer_name=new_name) for n in range(3)]
    unknown += [fake_intune.queue_revocation("not-a-serial", issuer_name=old_name)]
    unknown += [fake_intune.queue_revocation("0BADC0FFEEFF", issuer_name=old_name)]

    sync = RevocationSync(intune, store, issuer_name=new_name, batch=3)
    report = await sync.sync_once()

    assert report.downloaded == len(known) + len(unknown) == 12 and report.revoked == len(known)
    got = results(fake_intune)
    assert {c: got.get(c) for c in known} == {c: [(True, "None")] for c in known}
    assert {c: got.get(c) for c in unknown} == {c: [(False, "CertificateNotFoundError")] for c in unknown}
    assert fake_intune.pending_revocations() == []
    for cert in old_certs + new_certs:
        assert await status(store, cert) is CertStatus.REVOKED
    # The filter is exactly each name a success notification sent, the current one first.
    filters = [c.body["downloadParameters"]["issuerName"] for c in fake_intune.calls("download")]
    assert filters[0] == new_name and set(filters) == {new_name, old_name}

    # Nothing left: a second round uploads nothing again.
    assert await sync.sync_once() == type(report)(0, 0, 0)
    assert results(fake_intune) == got


async def test_foreign_issuer_is_answered_and_our_certificate_with_that_serial_stays_valid(
    intune: IntuneClient, store: SqliteStore, fake_intune: FakeIntune
) -> None:
    ca = Ca("scepd CA")
    ours = await issue(store, ca, "device")
    fake_intune.set_issuer_filter("ignore")  # a service that hands out another CA's work too
    foreign = [
        fake_intune.queue_revocation(serial_text(ours.serial_number), issuer_name="CN=Some Other CA,O=Elsewhere")
        for _ in range(5)
    ]
    await RevocationSync(intune, store, issuer_name=issuing_authority_name(ca.certificate), batch=2).sync_once()
    got = results(fake_intune)
    assert {c: got.get(c) for c in foreign} == {c: [(False, "CertificateNotFoundError")] for c in foreign}
    assert fake_intune.pending_revocations() == []
    assert await status(store, ours) is CertStatus.VALID


async def test_a_request_offered_again_is_answered_again_with_its_first_outcome(
    intune: IntuneClient, store: SqliteStore, fake_intune: FakeIntune
) -> None:
    ca = Ca("scepd CA")
    name = issuing_authority_name(ca.certificate)
    cert = await issue(store, ca, "device")
    context = fake_intune.queue_revocation(serial_text(cert.serial_number), issuer_name=name)
    sync = RevocationSync(intune, store, issuer_name=name, batch=5)
    await sync.sync_once()
    # Intune lost the result (or keeps offering it): the same requestContext comes again.
    fake_intune.queue_revocation(serial_text(cert.serial_number), issuer_name=name, request_context=context)
    await sync.sync_once()
    assert results(fake_intune)[context] == [(True, "None"), (True, "None")]  # not a Conflict the second time
    assert fake_intune.pending_revocations() == []


class FlakyStore:
    """The real store, whose revocation writes fail while `failing` is set (an injected fault)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.failing = True

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, name)

    async def apply_revocation_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.failing:
            raise StoreError("database or disk is full")
        return await self.store.apply_revocation_request(*args, **kwargs)


@pytest.mark.parametrize("fault", ["intune", "store", "token"])
async def test_the_loop_survives_a_fault_logs_it_once_and_resumes(
    intune: IntuneClient, store: SqliteStore, fake_intune: FakeIntune, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    ca = Ca("scepd CA")
    name = issuing_authority_name(ca.certificate)
    cert = await issue(store, ca, "device")
    context = fake_intune.queue_revocation(serial_text(cert.serial_number), issuer_name=name)
    flaky = FlakyStore(store)
    flaky.failing = fault == "store"
    refreshes = 0

    async def on_revoked() -> None:  # the CRL refresh, which signs on the token
        nonlocal refreshes
        refreshes += 1
        if fault == "token" and refreshes == 1:
            raise KeyBackendError("CKR_DEVICE_ERROR")

    if fault == "intune":
        fake_intune.fail("download", 500, times=None)
    kind = {"intune": "http_500", "store": "store", "token": "token"}[fault]
    errors = metrics.INTUNE_REVOCATION_SYNC_ERRORS.labels(kind)
    before = errors._value.get()
    sync = RevocationSync(
        intune,
        flaky,
        issuer_name=name,
        interval=0.05,
        batch=10,  # type: ignore[arg-type]
        on_revoked=on_revoked,
    )
    caplog.set_level(logging.INFO, logger="scepd.intune")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync.run)
        with trio.fail_after(10):
            while errors._value.get() < before + (1 if fault == "token" else 3):
                await trio.sleep(0.01)
        fake_intune.clear_faults()
        flaky.failing = False
        with trio.fail_after(10):
            while not (fake_intune.revocation_results().get(context) and refreshes >= (2 if fault == "token" else 1)):
                await trio.sleep(0.01)
            while "intune_revocation_sync_recovered" not in caplog.text:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    failed = [r for r in caplog.records if "event=intune_revocation_sync_failed" in r.getMessage()]
    assert len(failed) == 1 and f"kind={kind}" in failed[0].getMessage()  # once per episode
    assert not any(r.exc_info for r in caplog.records)  # a known fault: no traceback
    assert await status(store, cert) is CertStatus.REVOKED


async def test_without_the_pki_connector_sync_is_off_and_says_so(
    intune: IntuneClient, store: SqliteStore, fake_intune: FakeIntune, caplog: pytest.LogCaptureFixture
) -> None:
    fake_intune.set_discovery(omit=["PkiConnectorFEService"])
    sync = RevocationSync(intune, store, issuer_name="CN=scepd CA", interval=0.05)
    caplog.set_level(logging.INFO, logger="scepd.intune")
    with trio.move_on_after(0.5):
        await sync.run()
    assert metrics.INTUNE_REVOCATION_SYNC_ENABLED._value.get() == 0
    off = [r for r in caplog.records if "event=intune_revocation_sync_off" in r.getMessage()]
    assert len(off) == 1
    assert fake_intune.calls("download") == []
    # Readiness still passes, with a note.
    assert "revocation sync off" in (await intune.check() or "")


async def test_names_sent_before_the_ledger_kept_them_come_from_the_certificates(
    intune: IntuneClient, store: SqliteStore
) -> None:
    old, new = Ca("scepd CA 2023"), Ca("scepd CA 2025")
    await issue(store, old, "legacy-device", legacy=True)
    await issue(store, new, "device")
    sync = RevocationSync(intune, store, issuer_name=issuing_authority_name(new.certificate))
    assert await sync.issuer_names() == [
        issuing_authority_name(new.certificate),
        issuing_authority_name(old.certificate),
    ]
    assert [n.issuer for n in await store.notifications("tid-legacy-device")] == [
        issuing_authority_name(old.certificate)
    ]  # filled in once, kept
