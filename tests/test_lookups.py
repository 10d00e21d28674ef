"""The API's lookups (one row by primary key) under concurrency: each caller gets its own row;
on PostgreSQL those arriving together share one statement, and a lookup the server refuses
fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.storage import Store
from service.storage.group_commit import GroupCommit
from service.storage.postgres import LOOKUP_PARALLEL, Lookup, PostgresBackend, Row
from service.storage.sql_store import SqlStore

from .conftest import Tenant, add_template, make_tenant

Call = Callable[[], Awaitable[Any]]


async def mixed_lookups(store: Store, mine: Tenant, theirs: Tenant) -> list[Call]:
    """Lookups of every kind and outcome: found, another tenant's, missing, unknown token."""
    own = [await add_template(store, mine, str(1000 + n)) for n in range(5)]
    other = await add_template(store, theirs, "2000")
    calls: list[Call] = []
    for template_id in [*own, other, 999_999]:
        for token_id in (mine.token_id, theirs.token_id, "0123456789abcdef"):
            calls.append(partial(store.find_token_and_template, token_id, template_id))
        for workspace in (mine.workspace_id, theirs.workspace_id):
            calls.append(partial(store.get_template, workspace, template_id))
    calls += [partial(store.find_token, t) for t in (mine.token_id, "fedcba9876543210")]
    return calls


def counted_batches(store: Store) -> list[int]:
    """The sizes of the batches a PostgreSQL store's lookups are served in, from now on."""
    assert isinstance(store, SqlStore) and isinstance(store._db, PostgresBackend)
    backend, sizes = store._db, []
    real = backend._look_up_batch

    async def counted(lookups: list[Lookup]) -> list[Row | Exception | None]:
        sizes.append(len(lookups))
        return await real(lookups)

    backend._lookups = GroupCommit(counted, LOOKUP_PARALLEL)
    return sizes


async def test_concurrent_lookups_each_get_their_own_row(
    store: Store, tenant: Tenant, settings: Settings, database_url: str
) -> None:
    theirs = await make_tenant(store, settings, waba_id="987654321")
    calls = await mixed_lookups(store, tenant, theirs)
    alone = [await call() for call in calls]  # one at a time: nothing to share a batch with
    assert any(a not in (None, (None, None)) for a in alone)
    sizes = counted_batches(store) if database_url.startswith("postgres") else None
    together = await asyncio.gather(*(call() for call in calls * 3))
    assert together == alone * 3
    if sizes is not None:  # PostgreSQL: what arrived together went together
        assert sum(sizes) == len(together) and max(sizes) > 1 and len(sizes) < len(together)


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgres"):
        pytest.skip("batches of lookups are PostgreSQL's")
    return database_url


async def test_a_lookup_the_server_refuses_fails_alone(
    postgres_url: str, store: Store, tenant: Tenant
) -> None:
    template_id = await add_template(store, tenant, "1000")
    sizes = counted_batches(store)
    good = [store.get_template(tenant.workspace_id, template_id) for _ in range(20)]
    refused = store.get_template("no\x00nul", template_id)  # PostgreSQL text holds no NUL
    outcomes = await asyncio.gather(*good[:10], refused, *good[10:], return_exceptions=True)
    assert isinstance(outcomes[10], asyncpg.PostgresError)
    assert [getattr(o, "id", o) for o in outcomes[:10] + outcomes[11:]] == [template_id] * 20
    assert max(sizes) > 1  # it was in a batch with others, and failed only its own caller
