"""Idempotency keys in the store, on both backends: a key is claimed once, answers its first
request's answer, refuses another request, expires after 24 h and is pruned."""

from __future__ import annotations

import asyncio

import pytest

from service.config import Settings
from service.retention import prune
from service.storage import (
    IdempotencyBusy,
    IdempotencyMismatch,
    Store,
    StoredAnswer,
    idempotency_key,
    open_store,
    request_fingerprint,
)
from service.storage.idempotency import KEY_TTL_MS, RUNNING_LEASE_MS

from .conftest import NOW_MS, Tenant, make_tenant
from .raw_sql import rows

KEY = "3f1c0d6e-create-order-confirmation"
PRINT = request_fingerprint("POST", "/api/v3/workspaces/w/templates", b'{"name": "a"}')
OTHER_PRINT = request_fingerprint("POST", "/api/v3/workspaces/w/templates", b'{"name": "b"}')
BODY = b'{"success": true, "data": {"id": 7}}'


async def test_the_first_request_claims_the_key_and_a_repeat_gets_its_answer(
    store: Store, tenant: Tenant
) -> None:
    workspace = tenant.workspace_id
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS) is None
    with pytest.raises(IdempotencyBusy):  # the first still runs
        await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS + 1)
    await store.finish_idempotent(workspace, KEY, 201, BODY, NOW_MS + 2)
    repeat = await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS + 3)
    assert repeat == StoredAnswer(201, BODY) and isinstance(repeat.body, bytes)
    assert BODY.decode() not in repr(repeat)  # an answer's body stays out of logs
    await store.finish_idempotent(workspace, KEY, 500, b"late", NOW_MS + 4)  # no longer held
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS + 5) == repeat


async def test_the_key_with_another_request_is_a_mismatch_running_or_done(
    store: Store, tenant: Tenant
) -> None:
    workspace = tenant.workspace_id
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS) is None
    with pytest.raises(IdempotencyMismatch):
        await store.begin_idempotent(workspace, KEY, OTHER_PRINT, NOW_MS + 1)
    await store.finish_idempotent(workspace, KEY, 201, BODY, NOW_MS + 2)
    with pytest.raises(IdempotencyMismatch):
        await store.begin_idempotent(workspace, KEY, OTHER_PRINT, NOW_MS + 3)


async def test_keys_are_per_workspace(store: Store, settings: Settings, tenant: Tenant) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    assert await store.begin_idempotent(tenant.workspace_id, KEY, PRINT, NOW_MS) is None
    assert await store.begin_idempotent(other.workspace_id, KEY, OTHER_PRINT, NOW_MS) is None


async def test_an_abandoned_claim_is_free_again_and_a_done_key_is_never_abandoned(
    store: Store, tenant: Tenant
) -> None:
    workspace = tenant.workspace_id
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS) is None
    await store.abandon_idempotent(workspace, KEY)  # e.g. Meta throttled it: a retry redoes it
    assert await store.begin_idempotent(workspace, KEY, OTHER_PRINT, NOW_MS + 1) is None
    await store.finish_idempotent(workspace, KEY, 201, BODY, NOW_MS + 2)
    await store.abandon_idempotent(workspace, KEY)
    assert await store.begin_idempotent(workspace, KEY, OTHER_PRINT, NOW_MS + 3) == StoredAnswer(
        201, BODY
    )


async def test_a_key_names_its_request_for_24_hours_then_any_request_may_claim_it(
    store: Store, tenant: Tenant
) -> None:
    workspace = tenant.workspace_id
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS) is None
    await store.finish_idempotent(workspace, KEY, 201, BODY, NOW_MS + 1000)
    last = NOW_MS + KEY_TTL_MS
    assert await store.begin_idempotent(workspace, KEY, PRINT, last) == StoredAnswer(201, BODY)
    with pytest.raises(IdempotencyMismatch):
        await store.begin_idempotent(workspace, KEY, OTHER_PRINT, last)
    assert await store.begin_idempotent(workspace, KEY, OTHER_PRINT, last + 1) is None
    with pytest.raises(IdempotencyBusy):  # claimed afresh: its 24 h start again
        await store.begin_idempotent(workspace, KEY, OTHER_PRINT, last + 2)


async def test_a_claim_left_running_by_a_request_that_never_finished_is_taken_over(
    store: Store, tenant: Tenant
) -> None:
    workspace = tenant.workspace_id
    assert await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS) is None
    with pytest.raises(IdempotencyBusy):
        await store.begin_idempotent(workspace, KEY, PRINT, NOW_MS + RUNNING_LEASE_MS)
    with pytest.raises(IdempotencyMismatch):  # another request's key all the same
        await store.begin_idempotent(workspace, KEY, OTHER_PRINT, NOW_MS + RUNNING_LEASE_MS + 1)
    taken_over = NOW_MS + RUNNING_LEASE_MS + 1
    assert await store.begin_idempotent(workspace, KEY, PRINT, taken_over) is None
    with pytest.raises(IdempotencyBusy):
        await store.begin_idempotent(workspace, KEY, PRINT, taken_over + 1)


@pytest.mark.parametrize("expired", [False, True])
async def test_concurrent_begins_of_one_key_claim_it_once(
    database_url: str, store: Store, tenant: Tenant, expired: bool
) -> None:
    """Begins from two stores (two replicas), at once: one claims, every other is busy,
    whether the key is new or an expired one to replace."""
    workspace, at_ms = tenant.workspace_id, NOW_MS
    if expired:
        assert await store.begin_idempotent(workspace, KEY, OTHER_PRINT, at_ms) is None
        at_ms += KEY_TTL_MS + 1
    second = await open_store(database_url)
    try:
        begins = [s.begin_idempotent(workspace, KEY, PRINT, at_ms) for s in (store, second) * 4]
        results = await asyncio.gather(*begins, return_exceptions=True)
    finally:
        await second.close()
    assert results.count(None) == 1, results
    assert all(isinstance(r, IdempotencyBusy) for r in results if r is not None), results


async def test_retention_prunes_keys_older_than_24_hours_in_chunks(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    for n, age_ms in enumerate((KEY_TTL_MS + 3, KEY_TTL_MS + 2, KEY_TTL_MS + 1, KEY_TTL_MS)):
        await store.begin_idempotent(tenant.workspace_id, f"k{n}", PRINT, NOW_MS - age_ms)
    seen: list[int] = []
    pruned = await prune(store, settings, NOW_MS, lambda p: seen.append(p.idempotency_keys), 2)
    assert pruned.idempotency_keys == 3 and seen == [2, 3]
    assert await rows(store, "SELECT idempotency_key FROM idempotency_keys") == [
        {"idempotency_key": "k3"}  # exactly 24 h old: still names its request
    ]


@pytest.mark.parametrize("key", ["a", "x" * 255, "order 42/attempt:1", "~!@#$%^&*()"])
def test_a_key_is_1_to_255_printable_ascii_characters(key: str) -> None:
    assert idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline", "\x00"])
def test_anything_else_is_not_a_key(key: str) -> None:
    with pytest.raises(ValueError, match="1 to 255 printable ASCII characters"):
        idempotency_key(key)


def test_a_fingerprint_covers_the_method_the_path_and_the_body() -> None:
    path, body = "/api/v3/workspaces/w/templates/7", b'{"category": "UTILITY"}'
    fingerprint = request_fingerprint("POST", path, body)
    assert fingerprint == request_fingerprint("post", path, body)
    others = {
        request_fingerprint("DELETE", path, body),
        request_fingerprint("POST", path + "8", body),
        request_fingerprint("POST", path, body + b" "),
        request_fingerprint("POST", path, b""),
    }
    assert fingerprint not in others and len(others) == 4
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0  # SHA-256, hex
