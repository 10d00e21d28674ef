"""The event stream (GET .../events, server-sent events) against a real server over loopback,
read with aiohttp as a client reads it, on both backends: replay after an id, live events
from any replica within a second, the filter, keep-alive comments, refusals before the
stream starts, and the stream's end on a disconnect and on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service import api_events, watch
from service.config import Settings
from service.meta_webhooks import status_delivery
from service.notifications import payload as webhook_payload
from service.storage import Store, TemplateEvent

from .conftest import WABA_ID, Server, Tenant, make_tenant, serving, start_server
from .service_process import ServiceProcess, service_env
from .waiting import eventually

NOWHERE = "00000000-0000-4000-8000-000000000000"
READ_TIMEOUT_S = 5.0
QUIET_S = 1.2  # longer than two polls: an event that was coming would have come
LIVE_WITHIN_S = 1.0  # design section 11: any replica's event reaches every stream within 1 s
STOPS_WITHIN_S = 3.0  # a SIGTERM with a stream open: well inside the 20 s grace period
FOLLOWERS = "template_sync_event_followers "


def events_path(workspace_id: str) -> str:
    return f"/api/v3/workspaces/{workspace_id}/events"


class Stream:
    """An open event stream, read block by block as an EventSource parses it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def block(self, timeout_s: float = READ_TIMEOUT_S) -> dict[str, str]:
        """The next event or comment: field -> value (a comment's field is ""). EOFError
        when the server ended the stream."""
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout_s)
            if not line:
                raise EOFError
            text = line.decode().rstrip("\n")
            if not text:
                if fields:
                    return fields
                continue
            name, _, value = text.partition(":")
            fields[name] = value.removeprefix(" ")

    async def events(self, count: int) -> list[dict[str, str]]:
        """The next `count` events, comments skipped."""
        found: list[dict[str, str]] = []
        while len(found) < count:
            block = await self.block()
            if "" not in block:
                found.append(block)
        return found

    async def nothing_more(self) -> None:
        """No event arrives within QUIET_S."""
        with pytest.raises(TimeoutError):
            while True:
                block = await self.block(QUIET_S)
                assert "" in block, f"unexpected event {block}"


@asynccontextmanager
async def opened(
    session: aiohttp.ClientSession, base_url: str, tenant: Tenant, **kwargs: Any
) -> AsyncIterator[Stream]:
    headers = {"Authorization": f"Bearer {tenant.token}", **kwargs.pop("headers", {})}
    url = base_url + events_path(tenant.workspace_id)
    async with session.get(url, headers=headers, **kwargs) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["Cache-Control"] == "no-cache"
        try:
            yield Stream(response)
        finally:
            response.close()


def delivery(template_id: str, event: str, entry_time: int) -> bytes:
    return status_delivery(
        waba_id=WABA_ID, template_id=template_id, event=event, name=f"t_{template_id}",
        language="en_US", entry_time=entry_time,
    )  # fmt: skip


async def deliver(server: Server, template_id: str, event: str, entry_time: int) -> None:
    status, body, _ = await server.deliver(delivery(template_id, event, entry_time))
    assert status == 200, body


async def history(store: Store, tenant: Tenant, template_id: int | None = None) -> list[Any]:
    return await store.events_after(0, 1000, tenant.workspace_id, template_id)


def expected(found: TemplateEvent) -> dict[str, str]:
    """The event as the stream must send it: the data is the signed webhooks' payload."""
    data = webhook_payload(found)
    return {"id": str(found.event.id), "event": json.loads(data)["type"], "data": data.decode()}


async def seed_history(server: Server) -> None:
    """Two templates with five events: created and PENDING then APPROVED; created and
    REJECTED."""
    await deliver(server, "42", "PENDING", 1_751_247_500)
    await deliver(server, "42", "APPROVED", 1_751_247_600)
    await deliver(server, "43", "REJECTED", 1_751_247_700)


async def test_replay_after_last_event_id_gives_exactly_the_later_events_in_order(
    server: Server, store: Store, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_events, "PAGE", 2)  # the replay pages through the history
    await seed_history(server)
    everything = await history(store, tenant)
    assert [e.event.row.event for e in everything] == [
        "CREATED", "PENDING", "APPROVED", "CREATED", "REJECTED"
    ]  # fmt: skip
    session = server.session
    resume = {"Last-Event-ID": str(everything[1].event.id)}
    async with opened(session, server.base_url, tenant, headers=resume) as stream:
        assert await stream.events(3) == [expected(e) for e in everything[2:]]
        await stream.nothing_more()
    async with opened(session, server.base_url, tenant, params={"after": "0"}) as stream:
        assert await stream.events(5) == [expected(e) for e in everything]
    newest = str(everything[-1].event.id)
    async with opened(session, server.base_url, tenant, headers={"Last-Event-ID": newest}) as s:
        await s.nothing_more()


async def test_last_event_id_wins_over_after_which_resumes_too(
    server: Server, store: Store, tenant: Tenant
) -> None:
    await seed_history(server)
    ids = [e.event.id for e in await history(store, tenant)]
    query = {"after": str(ids[3])}
    async with opened(server.session, server.base_url, tenant, params=query) as stream:
        assert [e["id"] for e in await stream.events(1)] == [str(ids[4])]
        await stream.nothing_more()
    # An EventSource reconnects to the same URL with the last id it received: that one counts.
    resume = {"Last-Event-ID": str(ids[0])}
    async with opened(server.session, server.base_url, tenant, params=query, headers=resume) as s:
        assert [e["id"] for e in await s.events(4)] == [str(i) for i in ids[1:]]


async def test_a_webhook_on_another_replica_reaches_the_stream_within_a_second(
    server: Server, store: Store, tenant: Tenant, settings: Settings
) -> None:
    await seed_history(server)  # before the stream opens: not sent, it starts from now
    async with (
        serving(settings) as other_replica,
        opened(server.session, server.base_url, tenant) as stream,
    ):
        await deliver(other_replica, "44", "APPROVED", 1_751_247_800)
        delivered_at = time.monotonic()
        events = await stream.events(2)
        assert time.monotonic() - delivered_at < LIVE_WITHIN_S
        new = [e for e in await history(store, tenant) if e.template.provider_id == "44"]
        assert events == [expected(e) for e in new]
        assert [e["event"] for e in events] == ["template.created", "template.status_changed"]
        data = json.loads(events[1]["data"])["data"]
        assert data["history_id"] == int(events[1]["id"])
        assert (data["event"], data["source"], data["template"]["status"]) == (
            "APPROVED", "webhook", "APPROVED"
        )  # fmt: skip
        await stream.nothing_more()


async def test_template_id_filters_replay_and_live_events(
    server: Server, store: Store, tenant: Tenant
) -> None:
    await seed_history(server)
    templates = {e.template.provider_id: e.template.id for e in await history(store, tenant)}
    query = {"template_id": str(templates["42"]), "after": "0"}
    async with opened(server.session, server.base_url, tenant, params=query) as stream:
        replayed = await stream.events(3)
        assert [json.loads(e["data"])["data"]["event"] for e in replayed] == [
            "CREATED", "PENDING", "APPROVED"
        ]  # fmt: skip
        await deliver(server, "43", "APPROVED", 1_751_247_900)  # the other template
        await deliver(server, "42", "PAUSED", 1_751_247_950)
        [live] = await stream.events(1)
        assert json.loads(live["data"])["data"]["event"] == "PAUSED"
        await stream.nothing_more()


async def test_a_comment_keeps_a_quiet_stream_alive(
    server: Server, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_events, "KEEP_ALIVE_S", 0.3)
    async with opened(server.session, server.base_url, tenant) as stream:
        started = time.monotonic()
        assert await stream.block() == {"": "keep-alive"}
        assert await stream.block() == {"": "keep-alive"}
        assert time.monotonic() - started < 2.0


async def test_refusals_come_before_the_stream_in_the_apis_shapes(
    server: Server, store: Store, tenant: Tenant, settings: Settings
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    await seed_history(server)
    own_template = (await history(store, tenant))[0].template.id
    path = events_path(tenant.workspace_id)

    async def answer(
        token: str | None, workspace_path: str = path, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        status, body, _ = await server.request(
            "GET", workspace_path, headers=headers, timeout=aiohttp.ClientTimeout(total=5),
            **kwargs,
        )  # fmt: skip
        return status, body

    assert await answer(None) == (401, {"success": False, "message": "Unauthenticated"})
    assert (await answer("tsk_wrong"))[0] == 401
    workspace_not_found = (404, {"success": False, "message": "Workspace not found"})
    assert await answer(other.token) == workspace_not_found  # another tenant's token
    assert await answer(tenant.token, events_path(NOWHERE)) == workspace_not_found
    for name, value in (("after", "abc"), ("after", "-1"), ("after", ""), ("after", "1" * 20),
                        ("template_id", "x"), ("template_id", "1.5")):  # fmt: skip
        status, body = await answer(tenant.token, params={name: value})
        assert (status, list(body["errors"])) == (422, [name]), (name, value, body)
        assert body["success"] is False
    status, body = await answer(tenant.token, headers={"Last-Event-ID": "evt_1"})
    assert (status, list(body["errors"])) == (422, ["Last-Event-ID"])
    template_not_found = (404, {"success": False, "message": "Template not found"})
    assert await answer(tenant.token, params={"template_id": "999999"}) == template_not_found
    other_template = await make_other_template(server, store, other)
    assert await answer(tenant.token, params={"template_id": str(other_template)}) == (
        template_not_found
    )
    assert (await answer(other.token, events_path(other.workspace_id),
                         params={"template_id": str(own_template)}))[0] == 404  # fmt: skip


async def make_other_template(server: Server, store: Store, other: Tenant) -> int:
    """A template of the other tenant's WABA, from a webhook."""
    body = status_delivery(
        waba_id=other.waba_id, template_id="777001", event="APPROVED", name="theirs",
        language="en_US", entry_time=1_751_248_000,
    )  # fmt: skip
    assert (await server.deliver(body))[0] == 200
    [created, *_] = await history(store, other)
    return created.template.id


async def followers(session: aiohttp.ClientSession, base_url: str) -> float:
    async with session.get(f"{base_url}/metrics") as response:
        text = await response.text()
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(FOLLOWERS)]
    return float(value)


async def test_a_disconnect_ends_the_stream_on_the_server(
    settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_events, "KEEP_ALIVE_S", 0.1)
    uv_server, task, base_url = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as scraper:
            async with opened(session, base_url, tenant) as stream:
                assert await stream.block() == {"": "keep-alive"}
                assert uv_server.server_state.tasks  # the stream's request, under way
                assert await followers(scraper, base_url) == 1
            await scraper.close()
            await eventually(lambda: not uv_server.server_state.tasks, 2.0)
            assert not uv_server.server_state.connections
        async with aiohttp.ClientSession() as scraper:
            assert await followers(scraper, base_url) == 0  # the watch reads for nobody
    finally:
        uv_server.should_exit = True
        await task


async def test_a_thousand_events_at_once_reach_a_stream_in_order_past_its_feeds_limit(
    server: Server, store: Store, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More events in one pass than a feed holds: the stream reads the rest from the store,
    and still sends each event once, in order."""
    monkeypatch.setattr(watch, "MAX_QUEUED", 5)
    async with opened(server.session, server.base_url, tenant) as stream:
        for n in range(12):  # each a new template: CREATED and a status event
            await deliver(server, str(5000 + n), "APPROVED", 1_751_250_000 + n)
        events = await stream.events(24)
    assert [int(e["id"]) for e in events] == [e.event.id for e in await history(store, tenant)]


async def test_sigterm_ends_open_streams_and_the_server_stops_at_once(
    settings: Settings, tenant: Tenant, tmp_path: Path
) -> None:
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session, opened(session, service.url, tenant) as s:
            started = time.monotonic()
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            with pytest.raises(EOFError):  # the server ended it: no error, no half event
                await s.block(STOPS_WITHIN_S)
            assert await service.stop(timeout_s=STOPS_WITHIN_S) in (0, -signal.SIGTERM)
            assert time.monotonic() - started < STOPS_WITHIN_S
    finally:
        await service.stop(signal.SIGKILL)
    log = (tmp_path / "service.log").read_text()
    assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log, log
