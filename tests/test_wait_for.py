"""GET of one template with `wait_for` (design section 11, "Waiting for a verdict"): over real
HTTP on both backends, the change arriving through a signed webhook or straight in the store
(as another replica would write it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service import api, watch
from service.app import create_app
from service.config import Settings
from service.server import build_server
from service.storage import Store

from .conftest import Server, Tenant, add_template, fixture_body, make_tenant, until_started
from .service_process import free_port
from .waiting import eventually

PROVIDER_ID = "1689556908129832"  # the template of webhook-status-approved.json
VERDICTS = {"wait_for": "APPROVED,rejected"}
# The delay from a change to the answer: a poll interval, a read, and room for a slow host.
SEEN_WITHIN_S = 1.0
QUICK_S = 0.3  # an answer that did not wait
NGINX_SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[int]:
    """One item per template read of the GET endpoint (the server's store is of the same
    class as the test's), so a test knows when a request is waiting."""
    counted: list[int] = []
    cls = type(store)
    original: Callable[..., Awaitable[Any]] = cls.find_token_and_template

    async def find_token_and_template(self: Store, token_id: str, template_id: int) -> Any:
        counted.append(template_id)
        return await original(self, token_id, template_id)

    monkeypatch.setattr(cls, "find_token_and_template", find_token_and_template)
    return counted


async def timed(call: Awaitable[tuple[int, Any, Any]]) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body, _ = await call
    return status, body, time.monotonic() - started


async def waiting(reads: list[int], request: asyncio.Task[Any]) -> None:
    """Until `request` has read its template again at least once: it is in its wait."""
    await eventually(lambda: len(reads) >= 2 or request.done(), 3)
    assert not request.done(), request.result()


async def test_a_status_already_listed_answers_at_once(
    server: Server, store: Store, tenant: Tenant, reads: list[int]
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID, status="REJECTED")
    params = {**VERDICTS, "timeout": "60"}
    status, body, elapsed = await timed(server.api(tenant, f"/templates/{local_id}", params=params))
    assert (status, body["success"], body["data"]["status"]) == (200, True, "REJECTED")
    assert elapsed < QUICK_S and reads == [local_id]  # one read: no wait at all


async def test_a_webhook_during_the_wait_answers_with_the_new_status(
    server: Server, store: Store, tenant: Tenant, reads: list[int]
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID)
    params = {**VERDICTS, "timeout": "30"}
    request = asyncio.create_task(server.api(tenant, f"/templates/{local_id}", params=params))
    await waiting(reads, request)
    delivered, answer, _ = await server.deliver(fixture_body("webhook-status-approved.json"))
    assert (delivered, answer) == (200, {"success": True})
    sent = time.monotonic()
    status, body, _ = await request
    assert time.monotonic() - sent < SEEN_WITHIN_S
    assert status == 200 and body["data"]["status"] == "APPROVED"
    _, plain, _ = await server.api(tenant, f"/templates/{local_id}")
    assert body == plain  # the usual template answer


async def test_after_the_timeout_the_template_as_it_is(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID)
    params = {**VERDICTS, "timeout": "1"}
    status, body, elapsed = await timed(server.api(tenant, f"/templates/{local_id}", params=params))
    assert (status, body["data"]["status"]) == (200, "PENDING")
    assert 1.0 <= elapsed < 1.0 + SEEN_WITHIN_S


async def test_a_template_deleted_during_the_wait_is_404(
    server: Server,
    store: Store,
    tenant: Tenant,
    reads: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A removal deletes the template's history, so no event says so: the wait learns of it
    when it reads the template again, RECHECK_S after the last read."""
    monkeypatch.setattr(watch, "RECHECK_S", 1.0)
    local_id = await add_template(store, tenant, PROVIDER_ID)
    params = {**VERDICTS, "timeout": "30"}
    request = asyncio.create_task(server.api(tenant, f"/templates/{local_id}", params=params))
    await waiting(reads, request)
    await store.remove_template(tenant.workspace_id, local_id)  # as another replica would
    status, body, elapsed = await timed(request)
    assert (status, body) == (404, {"success": False, "message": "Template not found"})
    assert elapsed < watch.RECHECK_S + SEEN_WITHIN_S


async def test_a_client_gone_ends_the_wait_without_error(
    server: Server,
    store: Store,
    tenant: Tenant,
    reads: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID)
    url = f"{server.base_url}/api/v3/workspaces/{tenant.workspace_id}/templates/{local_id}"
    headers = {"Authorization": f"Bearer {tenant.token}"}
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.get(url, params={**VERDICTS, "timeout": "60"}, headers=headers)
        )
        await waiting(reads, request)
        request.cancel()  # the connection closes with the session
    answered = 'method="GET",route="template",status="200"'

    async def waits_ended() -> bool:
        _, text, _ = await server.request("GET", "/metrics")
        return answered in text  # the access log counts a request when it ends

    await eventually(waits_ended, 2 * SEEN_WITHIN_S)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"wait_for": "APPROVED", "timeout": "61"}, "timeout"),
     ({"wait_for": "APPROVED", "timeout": "0"}, "timeout"),
     ({"wait_for": "APPROVED", "timeout": "-1"}, "timeout"),
     ({"wait_for": "APPROVED", "timeout": "abc"}, "timeout"),
     ({"wait_for": "APPROVED", "timeout": "1.5"}, "timeout"),
     ({"wait_for": "NOPE"}, "wait_for"),
     ({"wait_for": "APPROVED,NOPE", "timeout": "5"}, "wait_for"),
     ({"wait_for": ""}, "wait_for"),
     ({"wait_for": " , "}, "wait_for"),
     ({"timeout": "61"}, "timeout")],
)  # fmt: skip
async def test_bad_parameters_are_422_in_the_list_endpoints_shape(
    server: Server, store: Store, tenant: Tenant, params: dict[str, str], field: str
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID)
    status, body, elapsed = await timed(server.api(tenant, f"/templates/{local_id}", params=params))
    assert status == 422 and elapsed < QUICK_S
    [message] = body["errors"][field]
    assert body == {"success": False, "message": message, "errors": {field: [message]}}
    if field == "wait_for" and params[field].strip(" ,"):
        assert "'NOPE'" in message and "APPROVED" in message and "UNKNOWN" in message


@pytest.mark.parametrize("params", [{"timeout": "5"}, {"sort": "name"}, {"wait_for_x": "1"}])
async def test_without_wait_for_the_answer_is_immediate_and_other_parameters_ignored(
    server: Server, store: Store, tenant: Tenant, params: dict[str, str]
) -> None:
    local_id = await add_template(store, tenant, PROVIDER_ID)
    status, body, elapsed = await timed(server.api(tenant, f"/templates/{local_id}", params=params))
    assert (status, body["data"]["status"]) == (200, "PENDING") and elapsed < QUICK_S


async def test_authorisation_and_a_missing_template_answer_before_any_wait(
    server: Server, store: Store, tenant: Tenant, settings: Settings
) -> None:
    other = await make_tenant(store, settings, waba_id="555000111")
    local_id = await add_template(store, tenant, PROVIDER_ID)
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates/{local_id}"
    query = {"wait_for": "APPROVED", "timeout": "60"}
    for headers, expected in [
        ({"Authorization": f"Bearer {other.token}"}, (404, "Workspace not found")),
        ({}, (401, "Unauthenticated")),
        ({"Authorization": f"Bearer {tenant.token}x"}, (401, "Unauthenticated")),
    ]:
        for params in (query, {**query, "timeout": "0"}):  # a bad timeout: the token decides
            call = server.request("GET", path, headers=headers, params=params)
            status, body, elapsed = await timed(call)
            assert (status, body["message"]) == expected and elapsed < QUICK_S
    status, body, elapsed = await timed(
        server.api(tenant, f"/templates/{local_id + 1000}", params=query)
    )
    assert (status, body["message"]) == (404, "Template not found") and elapsed < QUICK_S


async def test_the_servers_request_deadline_does_not_cut_a_wait(
    settings: Settings, store: Store, tenant: Tenant
) -> None:
    """`serve`'s deadlines bound receiving a request, not the app's answer."""
    local_id = await add_template(store, tenant, PROVIDER_ID)
    settings = replace(settings, port=free_port(), request_timeout_s=0.2)
    served = build_server(create_app(settings), settings)
    task = asyncio.create_task(served.serve())
    await until_started(served, task)
    try:
        async with aiohttp.ClientSession() as session:
            server = Server(f"http://127.0.0.1:{settings.port}", session)
            params = {**VERDICTS, "timeout": "1"}
            call = server.api(tenant, f"/templates/{local_id}", params=params)
            status, body, elapsed = await timed(call)
    finally:
        served.should_exit = True
        await task
    assert (status, body["data"]["status"]) == (200, "PENDING") and elapsed >= 1.0


def test_the_longest_wait_fits_in_deploy_nginx_read_timeout() -> None:
    """A wait sends nothing until it ends: nginx's proxy_read_timeout must outlast it."""
    timeouts = [line.split()[1] for line in NGINX_SITE.read_text().splitlines()
                if line.strip().startswith("proxy_read_timeout")]  # fmt: skip
    assert timeouts and all(int(t.rstrip("s;")) > api.MAX_WAIT_S for t in timeouts)
