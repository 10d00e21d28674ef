"""Meta's throttle window: a throttled Graph answer becomes a stored block, honoured by all."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service import throttle
from service.cli_ops import echo_failures
from service.config import Settings
from service.crypto import TokenCipher
from service.graph import GraphTemplate
from service.graph_errors import (
    DEFAULT_REGAIN_ACCESS_S,
    GraphError,
    ThrottledError,
    error_from_response,
    parse_usage,
)
from service.metrics import Metrics
from service.simulator import make_templates
from service.sources import WabaFailure
from service.storage import Store, Throttle
from service.sync import Syncer

from .conftest import APP_SECRET, META_TOKEN, NOW_MS, WABA_ID, Tenant, simulated
from .waiting import GatedSimulator, eventually

OTHER_WABA = "102290129340399"


def graph_error(code: int, regain_min: int | None = None) -> GraphError:
    """The GraphError of a Graph answer with this error code (and usage header)."""
    body = json.dumps({"error": {"code": code, "message": "limit", "fbtrace_id": "A1"}})
    usage = None
    if regain_min is not None:
        entry = {"type": "whatsapp_business_management", "call_count": 100,
                 "estimated_time_to_regain_access": regain_min}  # fmt: skip
        usage = parse_usage({"X-Business-Use-Case-Usage": json.dumps({WABA_ID: [entry]})})
    return error_from_response(400, body.encode(), usage, "token")


def test_a_throttled_answer_always_carries_its_window() -> None:
    hinted = graph_error(80008, regain_min=7)
    assert isinstance(hinted, ThrottledError) and hinted.kind == "throttled"
    assert (hinted.regain_access_s, hinted.code, hinted.fbtrace_id) == (420.0, 80008, "A1")
    bare = graph_error(4)
    assert isinstance(bare, ThrottledError) and bare.regain_access_s == DEFAULT_REGAIN_ACCESS_S
    proxy = error_from_response(429, b"Too Many Requests", None, "token")
    assert isinstance(proxy, ThrottledError) and proxy.regain_access_s == DEFAULT_REGAIN_ACCESS_S
    assert not isinstance(graph_error(190), ThrottledError)


def test_the_block_lasts_metas_regain_time() -> None:
    error = ThrottledError("limit", regain_access_s=420.5, code=80008)
    assert throttle.block_until(error, NOW_MS) == NOW_MS + 420_500


async def test_a_recorded_block_holds_until_it_ends(store: Store) -> None:
    error = ThrottledError("limit", regain_access_s=60.0, code=80008)
    block = await throttle.record(store, WABA_ID, error, NOW_MS)
    assert block == Throttle(WABA_ID, NOW_MS + 60_000, 80008)
    assert await throttle.blocked(store, WABA_ID, NOW_MS) == block
    assert await throttle.blocked(store, WABA_ID, NOW_MS + 59_999) == block
    assert await throttle.blocked(store, WABA_ID, NOW_MS + 60_000) is None  # over: call again
    assert await throttle.blocked(store, OTHER_WABA, NOW_MS) is None  # per WABA
    assert throttle.remaining_s(block, NOW_MS + 15_000) == 45.0
    assert throttle.remaining_s(block, NOW_MS + 90_000) == 0.0


def test_the_cli_says_when_to_try_again(capsys: pytest.CaptureFixture[str]) -> None:
    echo_failures([
        WabaFailure(WABA_ID, 80008, "throttled", "Meta rate limit", None, 599.2),
        WabaFailure(OTHER_WABA, 190, "token_invalid", "Invalid token"),
    ])  # fmt: skip
    throttled, invalid = capsys.readouterr().err.splitlines()
    assert throttled == (
        f"WABA {WABA_ID}: throttled (Graph code 80008): Meta rate limit; try again in 600 s"
    )
    assert invalid == f"WABA {OTHER_WABA}: token_invalid (Graph code 190): Invalid token"


@pytest.fixture
async def sim() -> AsyncIterator[tuple[GatedSimulator, str]]:
    async with simulated(GatedSimulator(app_secret=APP_SECRET), WABA_ID, OTHER_WABA) as running:
        yield running


async def test_a_block_stored_during_a_sync_keeps_it_from_the_next_waba(
    store: Store, settings: Settings, tenant: Tenant, sim: tuple[GatedSimulator, str]
) -> None:
    """Each WABA is checked right before its call: a block another replica (or the doctor)
    stores while the sync is busy with one WABA is honoured for the next."""
    simulator, graph_url = sim
    cipher = TokenCipher(settings.encryption_keys)
    await store.add_channel(tenant.workspace_id, OTHER_WABA, cipher.encrypt(META_TOKEN), NOW_MS)
    for waba_id in (WABA_ID, OTHER_WABA):
        templates = make_templates(waba_id, 3, pending=1)
        simulator.add_templates(waba_id, templates)
        remote = [GraphTemplate.from_graph(t) for t in templates]
        await store.apply_remote(tenant.workspace_id, waba_id, remote, 1, create=True)
    simulator.shut()
    async with aiohttp.ClientSession() as session:
        syncer = Syncer(store, session, graph_url, APP_SECRET, cipher, Metrics())
        running = asyncio.create_task(syncer.sync(tenant.workspace_id, "api"))
        await eventually(lambda: simulator.waiting == 1)  # the first WABA's call, held
        error = ThrottledError("limit", regain_access_s=600.0, code=80008)
        for waba_id in (WABA_ID, OTHER_WABA):
            await throttle.record(store, waba_id, error, int(time.time() * 1000))
        simulator.open()
        report = await running
    [failure] = report.failures
    assert (failure.kind, failure.code, failure.detail) == ("throttled", 80008, "Meta rate limit")
    assert failure.retry_after_s is not None and 590 < failure.retry_after_s <= 600
    assert report.checked == 1 and len(simulator.calls) == 1
