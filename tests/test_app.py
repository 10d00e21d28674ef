"""Probes, metrics, the OpenAPI document, JSON errors everywhere, and store outages."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from service.app import ROUTES
from service.config import Settings
from service.storage import Store

from .conftest import Server, Tenant, fixture_body, sign, start_server


async def test_healthz_and_readyz(server: Server) -> None:
    assert (await server.request("GET", "/healthz"))[0] == 200
    status, body, _ = await server.request("GET", "/readyz")
    assert (status, body["success"]) == (200, True)


async def test_metrics_are_prometheus_text(server: Server) -> None:
    await server.request("GET", "/healthz")
    status, text, headers = await server.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'template_sync_http_request_duration_seconds_count{method="GET",route="healthz"' in text


async def test_openapi_lists_every_route(server: Server) -> None:
    status, document, _ = await server.request("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    served = {route.path for route in ROUTES}
    assert set(document["paths"]) == served
    assert {
        "/api/v3/workspaces/{workspace}/templates/{id}", "/webhooks/meta", "/healthz",
        "/api/v3/workspaces/{workspace}/webhooks", "/api/v3/workspaces/{workspace}/events",
    } <= served  # fmt: skip


async def test_openapi_status_pattern_is_what_the_list_accepts(
    server: Server, tenant: Tenant
) -> None:
    _, document, _ = await server.request("GET", "/openapi.json")
    listing = document["paths"]["/api/v3/workspaces/{workspace}/templates"]["get"]
    [status] = [p for p in listing["parameters"] if p["name"] == "status"]
    pattern = re.compile(status["schema"]["pattern"].replace("$", r"\Z"))  # ECMA's $ is \Z
    assert "unknown" in listing["responses"]["422"]["description"]
    values = ["", "PENDING", "pending, In_Appeal", " ,APPROVED,, ", "UNKNOWN", "BOGUS",
              "PENDING;DROP", "APPROVED APPROVED", "\tPENDING", "PENDING\n", "PEND"]  # fmt: skip
    for value in values:
        got, body, _ = await server.api(tenant, "/templates", params={"status": value})
        assert got == (200 if pattern.match(value) else 422), (value, body)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("DELETE", "/webhooks/meta", 405), ("POST", "/healthz", 405),
     ("PUT", "/api/v3/workspaces/x/templates", 405)],
)  # fmt: skip
async def test_errors_are_json_not_plain_text(
    server: Server, method: str, path: str, status: int
) -> None:
    got, body, headers = await server.request(method, path)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert body["success"] is False and body["message"]


async def test_logs_carry_no_secret_token_or_body(
    server: Server, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    body = fixture_body("webhook-status-approved.json")
    await server.deliver(body)
    await server.deliver(body, signature="sha256=" + "0" * 64)
    query = {"hub.mode": "subscribe", "hub.verify_token": "test-verify-token", "hub.challenge": "c"}
    await server.request("GET", "/webhooks/meta", params=query)
    await server.api(tenant, "/templates")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "delivery" in text  # the delivery id is logged instead of the body
    for secret in (
        "test-app-secret",
        "test-verify-token",
        tenant.token,
        sign(body),
        "order_confirmation",
    ):
        assert secret not in text


async def test_a_wrong_secret_is_one_warning_with_the_fix_not_one_per_delivery(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    body = fixture_body("webhook-status-approved.json")
    wrong = sign(body, secret="not-the-app-secret")
    for _ in range(2):
        assert (await server.deliver(body, signature=wrong))[0] == 401
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "signature mismatch" in line and "TEMPLATE_SYNC_META_APP_SECRET" in line
    assert "App Dashboard" in line
    for leak in ("test-app-secret", "not-the-app-secret", wrong, wrong[7:], "order_confirmation"):
        assert leak not in caplog.text
    await server.deliver(body, signature=None)  # a signed one still goes through quietly
    assert (await server.deliver(body, signature="sha256=zz"))[0] == 401
    reasons = [r.getMessage().split(":")[0] for r in caplog.records if r.levelname == "WARNING"]
    assert reasons == ["webhook refused with 401, signature mismatch",
                       "webhook refused with 401, malformed signature"]  # fmt: skip


# --- store outage: PostgreSQL reached through a proxy the test can cut ------------------


class CuttableProxy:
    """A TCP relay on loopback; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.open = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        self.open = False
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server:
            self.server.close()


@pytest.fixture
async def proxied_settings(settings: Settings) -> AsyncIterator[tuple[Settings, CuttableProxy]]:
    parts = urlsplit(settings.database_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{port}"
    try:
        yield replace(settings, database_url=urlunsplit(parts._replace(netloc=netloc))), proxy
    finally:
        await proxy.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_store_outage_gives_503_with_retry_after_and_no_2xx(
    proxied_settings: tuple[Settings, CuttableProxy], store: Store, tenant: Tenant
) -> None:
    settings, proxy = proxied_settings
    uv, task, base = await start_server(settings)
    body = fixture_body("webhook-status-approved.json")
    try:
        async with aiohttp.ClientSession() as session:
            proxy.cut()
            headers = {"X-Hub-Signature-256": sign(body)}
            async with session.post(base + "/webhooks/meta", data=body, headers=headers) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"]
                assert (await resp.json())["success"] is False
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 503
            auth = {"Authorization": f"Bearer {tenant.token}"}
            url = f"{base}/api/v3/workspaces/{tenant.workspace_id}/templates"
            async with session.get(url, headers=auth) as resp:
                assert resp.status == 503 and "Traceback" not in await resp.text()
    finally:
        uv.should_exit = True
        await task
    assert await store.list_deliveries(None, 10) == []
