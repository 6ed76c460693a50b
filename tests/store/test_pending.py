"""The store's queue of requests held for approval."""

from __future__ import annotations

import dataclasses
import datetime as dt

import trio

from scepd.store.base import PendingRecord, PendingStatus
from scepd.store.sqlite import SqliteStore
from tests.store.test_sqlite import NOW, record

TTL = dt.timedelta(hours=1)


def held(transaction_id: str = "tx-1", csr: bytes = b"csr-1", **changes: object) -> PendingRecord:
    fields: dict[str, object] = {
        "id": 0,
        "transaction_id": transaction_id,
        "csr_sha256": csr.hex().ljust(64, "0")[:64],
        "csr_der": csr,
        "signer_der": b"signer",
        "subject": "CN=device-1",
        "endpoint": "held",
        "profile": "held",
        "challenge_mode": "static",
        "message_type": "PKCS_REQ",
        "renewal_of": None,
        "received_at": NOW,
        "expires_at": NOW + TTL,
        "status": PendingStatus.PENDING,
    }
    fields.update(changes)
    return PendingRecord(**fields)  # type: ignore[arg-type]


async def test_hold_keeps_every_field_and_a_resend_gets_the_same_request(store: SqliteStore) -> None:
    first, new = await store.hold_request(held())
    assert new and first.id > 0
    assert first == dataclasses.replace(held(), id=first.id)
    again, new_again = await store.hold_request(held(received_at=NOW + dt.timedelta(minutes=1)))
    assert not new_again and again == first
    other, new_other = await store.hold_request(held(csr=b"csr-2"))
    assert new_other and other.id != first.id
    assert await store.find_pending("tx-1") == other  # newest of the transaction
    assert await store.find_pending("tx-1", first.csr_sha256) == first
    assert await store.find_pending("tx-unknown") is None


async def test_a_request_is_decided_once(store: SqliteStore) -> None:
    request, _ = await store.hold_request(held())
    approved = await store.decide_pending(request.id, True, "ok by ops", NOW + dt.timedelta(minutes=5))
    assert approved is not None and approved.status is PendingStatus.APPROVED
    assert approved.reason == "ok by ops" and approved.decided_at == NOW + dt.timedelta(minutes=5)
    assert await store.decide_pending(request.id, False, "too late", NOW + dt.timedelta(minutes=6)) is None
    assert (await store.get_pending(request.id)).status is PendingStatus.APPROVED  # type: ignore[union-attr]
    assert await store.decide_pending(9999, True, "", NOW) is None


async def test_expired_requests_cannot_be_decided_and_are_swept(store: SqliteStore) -> None:
    stale, _ = await store.hold_request(held("tx-stale"))
    fresh, _ = await store.hold_request(held("tx-fresh", expires_at=NOW + 3 * TTL))
    later = NOW + 2 * TTL
    assert await store.decide_pending(stale.id, True, "", later) is None
    assert (await store.counts(later)).pending == 1
    assert await store.expire_pending(later) == 1
    assert (await store.get_pending(stale.id)).status is PendingStatus.EXPIRED  # type: ignore[union-attr]
    assert (await store.get_pending(fresh.id)).status is PendingStatus.PENDING  # type: ignore[union-attr]
    assert [r.id for r in await store.list_pending(PendingStatus.EXPIRED)] == [stale.id]
    assert [r.id for r in await store.list_pending()] == [fresh.id, stale.id]


async def test_issued_names_the_certificate(store: SqliteStore) -> None:
    request, _ = await store.hold_request(held())
    await store.decide_pending(request.id, True, "", NOW)
    await store.put_issued(record(0xABC))
    await store.mark_pending_issued(request.id, 0xABC)
    done = await store.get_pending(request.id)
    assert done is not None and done.status is PendingStatus.ISSUED and done.serial == 0xABC


async def test_only_an_approved_request_can_be_marked_issued(store: SqliteStore) -> None:
    request, _ = await store.hold_request(held())
    await store.put_issued(record(0xABD))
    await store.mark_pending_issued(request.id, 0xABD)
    assert (await store.get_pending(request.id)).status is PendingStatus.PENDING  # type: ignore[union-attr]


async def test_concurrent_approve_and_reject_one_wins(store: SqliteStore) -> None:
    request, _ = await store.hold_request(held())
    outcomes: list[PendingRecord | None] = []

    async def decide(approve: bool) -> None:
        outcomes.append(await store.decide_pending(request.id, approve, "", NOW))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(decide, i % 2 == 0)
    assert sum(o is not None for o in outcomes) == 1
