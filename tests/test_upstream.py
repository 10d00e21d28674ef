"""UpstreamClient against a fake upstream (our own API's shape) over real loopback HTTP, and
the body cap GraphClient shares with it (service.http_calls)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service.graph import GraphClient
from service.graph_errors import MAX_META_TEXT_CHARS, GraphError
from service.simulator import serving_app
from service.upstream import UpstreamClient
from service.upstream_answers import (
    MAX_RETRY_AFTER_S,
    MAX_TEXT_CHARS,
    UpstreamError,
    UpstreamTemplate,
)
from tests.fake_upstream import (
    HUGE_BYTES,
    LIST_PATH,
    REMOTE,
    SYNC_FAILED,
    SYNC_PATH,
    TOKEN,
    WABA,
    Answer,
    FakeUpstream,
    Seen,
    answer,
    failing,
    remote,
    serving_fake,
)
from tests.test_graph import Sleeps
from tests.waiting import eventually


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with serving_fake() as upstream:
        yield upstream


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    session: aiohttp.ClientSession, fake: FakeUpstream, sleeps: Sleeps, **options: Any
) -> UpstreamClient:
    return UpstreamClient(session, fake.base_url, REMOTE, TOKEN, sleep=sleeps, **options)


@pytest.fixture
def client(session: aiohttp.ClientSession, fake: FakeUpstream, sleeps: Sleeps) -> UpstreamClient:
    return make_client(session, fake, sleeps)


async def failure(call: Awaitable[Any]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call
    return info.value


# --- listing ------------------------------------------------------------------------------


async def test_all_pages_are_read_with_the_bearer_token(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    listed = await client.list_templates()

    assert [t.id for t in listed] == [t["provider_id"] for t in fake.templates]
    assert [(s.raw_path, s.query) for s in fake.seen] == [
        (LIST_PATH, {"page": str(page), "per_page": "100"}) for page in (1, 2, 3)
    ]
    assert {s.authorization for s in fake.seen} == {f"Bearer {TOKEN}"}
    assert client.calls == 3
    assert listed[0] == UpstreamTemplate(
        id="1689556908000000",
        name="template_0",
        language="en_US",
        status="PENDING",
        category="UTILITY",
        rejected_reason=None,
        quality_score=None,
        waba_id=WABA,
    )


async def test_items_are_mapped_and_those_not_yet_at_meta_skipped(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    long_reason = "x" * (MAX_META_TEXT_CHARS + 50)
    fake.templates = [
        remote(0, provider_id=None),  # a draft the upstream has not sent to Meta
        remote(1, provider_id=""),
        remote(2, provider_id=1387372356726668, waba_id=None),  # an integer id
        remote(3, status="REJECTED", rejected_reason=long_reason, quality_score={"score": "RED"}),
        remote(4, status="APPROVED", rejected_reason="NONE", quality_score="GREEN", category=None),
        remote(5, quality_score="not a score"),
    ]
    listed = {t.id: t for t in await client.list_templates()}

    assert list(listed) == [
        "1387372356726668",
        *(fake.templates[n]["provider_id"] for n in (3, 4, 5)),
    ]
    assert listed["1387372356726668"].waba_id is None
    rejected = listed[fake.templates[3]["provider_id"]]
    assert (rejected.status, rejected.quality_score) == ("REJECTED", "RED")
    assert rejected.rejected_reason == long_reason[:MAX_META_TEXT_CHARS]
    approved = listed[fake.templates[4]["provider_id"]]
    assert (approved.rejected_reason, approved.quality_score, approved.category) == (
        None,
        "GREEN",
        None,
    )
    assert listed[fake.templates[5]["provider_id"]].quality_score is None


async def test_a_page_without_meta_is_the_last(client: UpstreamClient, fake: FakeUpstream) -> None:
    fake.sticky = answer(200, {"data": [remote(0), remote(1)]})
    assert len(await client.list_templates()) == 2
    assert len(fake.seen) == 1


async def test_an_empty_workspace_is_one_call(client: UpstreamClient, fake: FakeUpstream) -> None:
    fake.templates = []
    assert await client.list_templates() == []
    assert len(fake.seen) == 1


async def test_a_huge_last_page_is_refused_without_fetching_it(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    fake.stated_last_page = lambda page, real: 10**9
    error = await failure(client.list_templates())
    assert error.kind == "invalid_response" and "1000000000 pages" in error.message
    assert len(fake.seen) == 1


@pytest.mark.parametrize(("stated", "gets"), [(lambda page: 3 + page, 4), (lambda page: 2, 2)])
async def test_a_changing_last_page_never_extends_the_walk(
    client: UpstreamClient, fake: FakeUpstream, stated: Callable[[int], int], gets: int
) -> None:
    fake.stated_last_page = lambda page, real: stated(page)  # first page says 4 or 2
    listed = await client.list_templates()
    assert len(fake.seen) == gets
    assert len(listed) == min(250, gets * 100)


async def test_a_repeated_provider_id_is_listed_once(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    fake.templates = [remote(0), remote(1), remote(0, status="APPROVED")]
    listed = await client.list_templates()
    assert [(t.id, t.status) for t in listed] == [
        (fake.templates[0]["provider_id"], "APPROVED"),
        (fake.templates[1]["provider_id"], "PENDING"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Bad gateway</html>",
        b"[]",
        b"null",
        b'{"data": {"0": {}}}',
        b'{"data": [1]}',
        json.dumps({"data": [remote(0, status=None)]}).encode(),
        json.dumps({"data": [remote(0, status="pending")]}).encode(),
        json.dumps({"data": [remote(0, name="")]}).encode(),
        json.dumps({"data": [remote(0, language=["en_US"])]}).encode(),
        json.dumps({"data": [remote(0, provider_id="12ab")]}).encode(),
        json.dumps({"data": [remote(0, provider_id=True)]}).encode(),
        json.dumps({"data": [remote(0, provider_id="1" * 33)]}).encode(),
        json.dumps({"data": [remote(0, waba_id="WABA-1")]}).encode(),
        json.dumps({"data": [remote(0, category="utility")]}).encode(),
        json.dumps({"data": [remote(0, rejected_reason=7)]}).encode(),
        json.dumps({"data": [], "meta": {"last_page": "3"}}).encode(),
        json.dumps({"data": [], "meta": []}).encode(),
    ],
)
async def test_a_malformed_answer_fails_the_whole_listing_without_retry(
    client: UpstreamClient, fake: FakeUpstream, sleeps: Sleeps, body: bytes
) -> None:
    fake.sticky = answer(200, body, {"Content-Type": "application/json"})
    error = await failure(client.list_templates())
    assert (error.kind, error.attempts, len(fake.seen)) == ("invalid_response", 1, 1)
    assert not error.retryable and sleeps.delays == []


async def test_5xx_reads_are_retried_with_backoff_then_succeed(
    client: UpstreamClient, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.answers = [failing("Server Error", 500), answer(502, b"bad gateway")]
    assert len(await client.list_templates()) == 250
    assert [s.query["page"] for s in fake.seen] == ["1", "1", "1", "2", "3"]
    assert len(sleeps.delays) == 2
    assert 0.25 <= sleeps.delays[0] <= 0.5 and 0.5 <= sleeps.delays[1] <= 1.0


async def test_5xx_reads_give_up_after_max_attempts(
    client: UpstreamClient, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.sticky = failing("Server Error", 500)
    error = await failure(client.list_templates())
    assert (error.kind, error.http_status, error.attempts) == ("server", 500, 3)
    assert len(fake.seen) == 3 and len(sleeps.delays) == 2


async def test_a_5xx_asking_to_wait_is_left_to_the_caller(
    client: UpstreamClient, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.sticky = answer(
        503, {"success": False, "message": "Store unavailable"}, {"Retry-After": "5"}
    )
    error = await failure(client.list_templates())
    assert (error.kind, error.retry_after_s, error.attempts) == ("server", 5.0, 1)
    assert len(fake.seen) == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (401, "Unauthenticated", "unauthorized"),
        (403, "Forbidden", "unauthorized"),
        (404, "Workspace not found", "not_found"),
        (400, "Unknown query parameter", "invalid_response"),
    ],
)
async def test_refusals_are_classified_and_not_retried(
    client: UpstreamClient, fake: FakeUpstream, status: int, message: str, kind: str
) -> None:
    fake.sticky = failing(message, status)
    error = await failure(client.list_templates())
    assert (error.kind, error.http_status, error.attempts) == (kind, status, 1)
    assert error.message == f"HTTP {status}: {message}"
    assert len(fake.seen) == 1


async def test_a_hanging_upstream_is_a_network_error_after_max_attempts(
    session: aiohttp.ClientSession, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.sticky = fake.hang
    client = make_client(session, fake, sleeps, timeout_s=0.3)
    error = await failure(client.list_templates())
    assert (error.kind, error.attempts, error.message) == ("network", 3, "request timed out")
    assert len(fake.seen) == 3 and len(sleeps.delays) == 2


async def test_connection_refused_is_a_network_error(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = UpstreamClient(session, "http://127.0.0.1:9", REMOTE, TOKEN, sleep=sleeps)
    error = await failure(client.list_templates())
    assert (error.kind, error.attempts, client.calls) == ("network", 3, 3)
    assert error.message.startswith("ClientConnectorError")


@pytest.mark.parametrize("declared", [False, True])
async def test_a_50_mb_answer_is_refused_before_it_is_read(
    client: UpstreamClient, fake: FakeUpstream, declared: bool
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        return await fake.stream(request, declared)

    fake.sticky = huge
    error = await failure(client.list_templates())
    assert error.kind == "invalid_response" and "8388608 bytes" in error.message
    assert len(fake.seen) == 1
    await eventually(fake.stream_ended.is_set, message="the server still streaming")
    assert fake.streamed < HUGE_BYTES / 2  # the client hung up: the rest was never sent


async def test_a_redirect_is_not_followed(client: UpstreamClient, fake: FakeUpstream) -> None:
    fake.answers = [answer(302, b"", {"Location": f"{fake.base_url}elsewhere"})]
    error = await failure(client.list_templates())
    assert (error.kind, error.http_status) == ("invalid_response", 302)
    assert [s.raw_path for s in fake.seen] == [LIST_PATH]


# --- sync ---------------------------------------------------------------------------------


async def test_sync_200_means_synced(client: UpstreamClient, fake: FakeUpstream) -> None:
    assert await client.sync() is True
    assert fake.seen == [Seen("POST", SYNC_PATH, {}, f"Bearer {TOKEN}")]


async def test_sync_no_pending_templates_means_nothing_to_do(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    fake.sticky = failing("No pending templates found")
    assert await client.sync() is False
    assert len(fake.seen) == 1


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [(404, "Workspace not found", "not_found"), (401, "Unauthenticated", "unauthorized"),
     (404, "No pending templates found, really", "not_found")],
)  # fmt: skip
async def test_sync_refusals_are_classified(
    client: UpstreamClient, fake: FakeUpstream, status: int, message: str, kind: str
) -> None:
    fake.sticky = failing(message, status)
    error = await failure(client.sync())
    assert (error.kind, error.http_status, error.message) == (
        kind,
        status,
        f"HTTP {status}: {message}",
    )


async def test_a_failed_sync_keeps_the_upstream_detail_and_is_tried_once(
    client: UpstreamClient, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.sticky = answer(500, SYNC_FAILED)
    error = await failure(client.sync())
    assert (error.kind, error.http_status, error.attempts) == ("server", 500, 1)
    assert error.message == "HTTP 500: Failed to sync the templates: Error validating access token"
    assert error.retry_after_s is None
    assert len(fake.seen) == 1 and sleeps.delays == []


async def test_upstream_texts_are_cut_short_and_never_carry_the_token(
    client: UpstreamClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    detail = f"bad token {TOKEN}\n" + "y" * 5000
    fake.sticky = answer(500, {**SYNC_FAILED, "error": {"detail": detail}})
    error = await failure(client.sync())
    assert TOKEN not in error.message and "bad token ***" in error.message
    assert "\n" not in error.message
    assert len(error.message) < 2 * MAX_TEXT_CHARS + 20
    logged = [r.getMessage() for r in caplog.records]
    assert any(REMOTE in m and "server" in m for m in logged)
    assert not any(TOKEN in m or "http://" in m or "yyyy" in m for m in logged)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("99999999", MAX_RETRY_AFTER_S), ("Wed, 21 Oct 2026 07:28:00 GMT", None)],
)
async def test_a_throttled_sync_says_when_to_come_back(
    client: UpstreamClient, fake: FakeUpstream, header: str, expected: float | None
) -> None:
    fake.sticky = answer(
        429, {"success": False, "message": "Too Many Requests"}, {"Retry-After": header}
    )
    error = await failure(client.sync())
    assert (error.kind, error.retry_after_s, len(fake.seen)) == ("throttled", expected, 1)


async def test_a_hanging_sync_times_out_once(
    session: aiohttp.ClientSession, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    fake.sticky = fake.hang
    client = make_client(session, fake, sleeps, timeout_s=5.0, sync_timeout_s=0.3)
    error = await failure(client.sync())
    assert (error.kind, error.attempts, len(fake.seen)) == ("network", 1, 1)


# --- check and construction ---------------------------------------------------------------


async def test_check_returns_the_total_in_one_call(
    client: UpstreamClient, fake: FakeUpstream
) -> None:
    assert await client.check() == 250
    assert [(s.raw_path, s.query) for s in fake.seen] == [(LIST_PATH, {"per_page": "1"})]


@pytest.mark.parametrize(
    ("sticky", "kind"),
    [
        (failing("Unauthenticated", 401), "unauthorized"),
        (failing("Workspace not found"), "not_found"),
        (answer(200, {"success": True, "data": []}), "invalid_response"),
        (answer(500, SYNC_FAILED), "server"),
    ],
)
async def test_check_says_what_is_wrong(
    client: UpstreamClient, fake: FakeUpstream, sticky: Answer, kind: str
) -> None:
    fake.sticky = sticky
    assert (await failure(client.check())).kind == kind
    assert len(fake.seen) == 1


async def test_the_remote_workspace_is_quoted_into_the_path(
    session: aiohttp.ClientSession, fake: FakeUpstream, sleeps: Sleeps
) -> None:
    await UpstreamClient(session, fake.base_url, "a b/../c?", TOKEN, sleep=sleeps).check()
    assert fake.seen[0].raw_path == "/api/v3/workspaces/a%20b%2F..%2Fc%3F/templates"


@pytest.mark.parametrize(
    ("base_url", "workspace", "token"),
    [("ftp://example.com", REMOTE, TOKEN), ("https://user:pw@example.com", REMOTE, TOKEN),
     ("https://example.com?x=1", REMOTE, TOKEN), ("example.com", REMOTE, TOKEN),
     ("https://example.com", "..", TOKEN), ("https://example.com", REMOTE, ""),
     ("https://example.com", REMOTE, "a\r\nX-Other: 1")],
)  # fmt: skip
def test_odd_settings_are_refused_at_construction(
    base_url: str, workspace: str, token: str
) -> None:
    with pytest.raises(ValueError) as info:
        UpstreamClient(None, base_url, workspace, token)  # type: ignore[arg-type]
    assert "pw" not in str(info.value) and TOKEN not in str(info.value)


# --- the Graph client shares the cap ------------------------------------------------------


async def test_graph_refuses_a_20_mb_answer(session: aiohttp.ClientSession) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:  # one valid JSON object of 20 MiB, in 64 KiB chunks, without Content-Length
            await response.write(b'{"name": "')
            for _ in range(20 * 16):
                await response.write(b"a" * 65536)
            await response.write(b'"}')
        except ConnectionResetError:
            pass
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", huge)
    async with serving_app(app) as origin:
        graph = GraphClient(session, f"{origin}/v25.0", None)
        with pytest.raises(GraphError) as info:
            await graph.get(WABA, TOKEN)
    assert (info.value.kind, info.value.attempts, graph.calls) == ("invalid_response", 1, 1)
    assert info.value.message == "answer larger than 16777216 bytes"
