"""Shared fixtures: a store on each backend, a real server on loopback, a seeded tenant."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
import uvicorn

from service import meta_webhooks
from service.app import create_app
from service.config import Secret, Settings
from service.crypto import TokenCipher, generate_key, new_bearer_token
from service.simulator import Simulator
from service.simulator import base_url as simulator_url
from service.simulator import serve as serve_simulator
from service.storage import NewTemplate, Store, open_store

from .waiting import eventually

POSTGRES_URL = os.environ.get("TEMPLATE_SYNC_TEST_POSTGRES_URL")
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WABA_ID = "102290129340398"
NOW_MS = 1_780_000_000_000
META_TOKEN = "EAAG-meta-token"
SERVER_START_TIMEOUT_S = 10.0
SimulatorT = TypeVar("SimulatorT", bound=Simulator)


def fixture_body(name: str) -> bytes:
    """A fixture from tests/fixtures as compact JSON with non-ASCII escaped, like Meta sends it."""
    return compact(json.loads((FIXTURES / name).read_text()))


def compact(document: Any) -> bytes:
    return meta_webhooks.encode(document)


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return meta_webhooks.signature(secret, body)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for a test's outgoing calls (Graph, relays)."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One database URL per backend; PostgreSQL gets a private schema, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/template-sync.db"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need TEMPLATE_SYNC_TEST_POSTGRES_URL (see README)")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}search_path={schema}"
    finally:
        asyncio.run(_admin(f'DROP SCHEMA "{schema}" CASCADE'))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def migrated_store(database_url: str) -> AsyncIterator[Store]:
    """A store on `database_url`, migrated, closed on exit."""
    opened = await open_store(database_url)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with migrated_store(database_url) as opened:
        yield opened


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        meta_app_secrets=(Secret(APP_SECRET),),
        meta_verify_token=Secret(VERIFY_TOKEN),
        encryption_keys=(Secret(generate_key()),),
        data_dir=tmp_path / "data",
        graph_url="http://127.0.0.1:9/v25.0",
        poll_enabled=False,
    )


@dataclass
class Tenant:
    workspace_id: str
    token: str
    token_id: str
    waba_id: str


async def make_tenant(store: Store, settings: Settings, waba_id: str = WABA_ID) -> Tenant:
    workspace = await store.create_workspace("Acme", NOW_MS)
    cipher = TokenCipher(settings.encryption_keys)
    await store.add_channel(workspace.id, waba_id, cipher.encrypt(META_TOKEN), NOW_MS)
    new = new_bearer_token()
    await store.create_token(workspace.id, new.token_id, new.token_hash, "tests", NOW_MS)
    return Tenant(workspace.id, new.token, new.token_id, waba_id)


async def add_template(
    store: Store, tenant: Tenant, provider_id: str, status: str = "PENDING", **fields: Any
) -> int:
    new = NewTemplate(
        workspace_id=tenant.workspace_id,
        waba_id=fields.pop("waba_id", tenant.waba_id),
        provider_id=provider_id,
        name=fields.pop("name", f"template_{provider_id}"),
        language=fields.pop("language", "en_US"),
        category=fields.pop("category", "UTILITY"),
        status=status,
    )
    return (await store.add_template(new, NOW_MS)).id


@pytest.fixture
async def tenant(store: Store, settings: Settings) -> Tenant:
    return await make_tenant(store, settings)


class Server:
    """The service on a loopback port, driven over real HTTP."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.session = session

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            body: Any = json.loads(text) if is_json else text
            return response.status, body, response.headers

    async def deliver(self, body: bytes, signature: str | None = None) -> tuple[int, Any, Any]:
        headers = {"Content-Type": "application/json"}
        headers["X-Hub-Signature-256"] = sign(body) if signature is None else signature
        return await self.request("POST", "/webhooks/meta", data=body, headers=headers)

    async def api(self, tenant: Tenant, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {tenant.token}"}
        return await self.request(
            "GET", f"/api/v3/workspaces/{tenant.workspace_id}{path}", headers=headers, **kwargs
        )


async def start_server(settings: Settings) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every kept-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = replace(settings, port=port)
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server, task)
    return server, task, f"http://127.0.0.1:{port}"


async def until_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Wait for `server`, served by `task`, to listen; fail if it stops or takes too long."""

    def listening() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        return server.started

    await eventually(listening, SERVER_START_TIMEOUT_S)


@asynccontextmanager
async def simulated(simulator: SimulatorT, *waba_ids: str) -> AsyncIterator[tuple[SimulatorT, str]]:
    """The Meta simulator on a loopback port, knowing `waba_ids` with META_TOKEN:
    (simulator, Graph base URL with version)."""
    for waba_id in waba_ids:
        simulator.add_waba(waba_id, META_TOKEN)
    runner = await serve_simulator(simulator)
    try:
        yield simulator, simulator_url(runner)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Server]:
    """The app served on loopback with `settings`, and a client session for it."""
    uv_server, task, base_url = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(base_url, session)
    finally:
        uv_server.should_exit = True
        await task


@pytest.fixture
async def server(settings: Settings, store: Store) -> AsyncIterator[Server]:
    """Depends on `store` so tests can seed and inspect the same database."""
    async with serving(settings) as served:
        yield served
