"""GraphClient against the simulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from service.graph import CreatedTemplate, GraphClient, GraphTemplate, appsecret_proof
from service.graph_errors import (
    DEFAULT_REGAIN_ACCESS_S,
    MAX_META_TEXT_CHARS,
    GraphError,
    ThrottledError,
    classify,
    is_name_taken,
    is_template_not_found,
    parse_usage,
)
from service.simulator import Handler, Simulator, base_url, bound_port, make_templates, serve
from tests.certificates import issue
from tests.conftest import FIXTURES
from tests.waiting import eventually

WABA = "102290129340398"
OTHER_WABA = "200000000000001"
TOKEN = "EAAGsecret-token-0123456789"
OTHER_TOKEN = "EAAGother-token-9876543210"
SECRET = "app-secret-for-tests"


class Sleeps:
    """Injected sleep: records delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


class LateSimulator(Simulator):
    """The simulator; its next `late` Graph calls take effect, then answer `late_s` later
    (Meta that did the work but whose answer the client gave up on)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.late = 0
        self.late_s = 2.0

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.middlewares.insert(0, self._answer_late)
        return app

    @web.middleware
    async def _answer_late(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if self.late and not request.path.startswith("/_sim/"):
            self.late -= 1
            await asyncio.sleep(self.late_s)  # latency past the client's timeout, not a wait
        return response


@pytest.fixture
def sim() -> LateSimulator:
    sim = LateSimulator(app_secret=SECRET, review_delay_s=None)
    sim.add_waba(WABA, TOKEN, name="Acme")
    sim.add_waba(OTHER_WABA, OTHER_TOKEN)
    return sim


@pytest.fixture
async def url(sim: Simulator) -> AsyncIterator[str]:
    runner = await serve(sim, "127.0.0.1", 0)
    try:
        yield base_url(runner)
    finally:
        await runner.cleanup()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(session: aiohttp.ClientSession, url: str, sleeps: Sleeps) -> GraphClient:
    return GraphClient(session, url, SECRET, sleep=sleeps)


def template(template_id: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": template_id,
        "name": "order_update",
        "language": "pt_BR",
        "status": "APPROVED",
        **extra,
    }


# --- paging -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "limit"), [(0, 100), (1, 100), (100, 100), (101, 100), (250, 100), (60, 25), (7, 3)]
)
async def test_list_templates_reads_every_page(
    sim: Simulator, session: aiohttp.ClientSession, url: str, count: int, limit: int
) -> None:
    sim.add_templates(WABA, make_templates(WABA, count, pending=3 if count >= 3 else 0))
    client = GraphClient(session, url, SECRET, page_limit=limit)

    templates = await client.list_templates(WABA, TOKEN)

    assert [t.id for t in templates] == [str(t["id"]) for t in sim.templates(WABA)]
    assert client.calls == max(1, math.ceil(count / limit))
    assert len(sim.calls) == client.calls
    if count >= 3:
        assert [t.status for t in templates[-3:]] == ["PENDING"] * 3


async def test_next_followed_on_another_version_and_default_page_size(
    sim: Simulator, session: aiohttp.ClientSession, url: str
) -> None:
    sim.next_version = "v99.0"
    sim.add_templates(WABA, make_templates(WABA, 60))
    client = GraphClient(session, url, SECRET, page_limit=25)  # Meta's default page size

    templates = await client.list_templates(WABA, TOKEN)

    assert len(templates) == 60
    assert [c.path.split("/")[1] for c in sim.calls] == ["v25.0", "v99.0", "v99.0"]


async def test_on_call_counts_requests(
    sim: Simulator, session: aiohttp.ClientSession, url: str
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 5))
    seen: list[int] = []
    client = GraphClient(session, url, SECRET, page_limit=2, on_call=lambda: seen.append(1))
    await client.list_templates(WABA, TOKEN)
    assert len(seen) == client.calls == 3


# --- paging.next stays where the token may go ----------------------------------------


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a throwaway self-signed 127.0.0.1/localhost cert."""
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _, _, cert_path, key_path = issue(directory, "graph", "localhost", None, san=san)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


class Bystander:
    """A second loopback server on another port: records every connection, answers none."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(TimeoutError):
            self.received += await asyncio.wait_for(reader.read(4096), timeout=1.0)
        writer.close()


@pytest.fixture
async def bystander() -> AsyncIterator[tuple[Bystander, int]]:
    recorder = Bystander()
    server = await asyncio.start_server(recorder.accept, "127.0.0.1", 0)
    try:
        yield recorder, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_pair(tmp_path)


async def hostile_meta(
    next_link: str, server_tls: ssl.SSLContext
) -> tuple[web.AppRunner, list[str]]:
    """Meta over TLS whose first page links to `next_link` (with `{port}` filled in)."""
    paths: list[str] = []

    async def page(request: web.Request) -> web.Response:
        paths.append(request.path)
        body: dict[str, Any] = {"data": [template(str(len(paths)))]}
        if len(paths) == 1:
            link = next_link.format(port=bound_port(runner))
            body["paging"] = {"next": f"{link}?access_token={TOKEN}&after=MQ"}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    return runner, paths


@pytest.mark.parametrize(
    "next_link",
    [
        "https://127.0.0.1:{other}/graph/v25.0/1/message_templates",  # another port
        "http://127.0.0.1:{other}/graph/v25.0/1/message_templates",  # and in cleartext
        "http://127.0.0.1:{port}/graph/v25.0/1/message_templates",  # Meta's port, cleartext
        "https://localhost:{port}/graph/v25.0/1/message_templates",  # another host name
        "https://127.0.0.1:{port}/other/v25.0/1/message_templates",  # outside the prefix
        "https://127.0.0.1:{port}/graph/../v25.0/1/message_templates",  # dot segments
        "https://user:s3cr3tpw@127.0.0.1:{port}/graph/v25.0/1/message_templates",  # credentials
    ],
)
async def test_paging_next_outside_the_graph_url_is_never_requested(
    bystander: tuple[Bystander, int],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
    next_link: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder, other = bystander
    runner, paths = await hostile_meta(next_link.replace("{other}", str(other)), tls[0])
    graph_url = f"https://127.0.0.1:{bound_port(runner)}/graph/v25.0"
    connector = aiohttp.TCPConnector(ssl=tls[1])
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            client = GraphClient(session, graph_url, SECRET, sleep=Sleeps())
            (error,) = await asyncio.gather(
                client.list_templates(WABA, TOKEN), return_exceptions=True
            )
    finally:
        await runner.cleanup()

    assert (recorder.connections, recorder.received) == (0, b"")  # not even a TLS hello
    assert (paths, client.calls) == (["/graph/v25.0/102290129340398/message_templates"], 1)
    assert isinstance(error, GraphError) and error.kind == "invalid_response", error
    assert "paging.next leaves the Graph URL" in error.message
    messages = [r.getMessage() for r in caplog.records]
    assert any(WABA in m and "outside the Graph URL" in m for m in messages)
    for text in [*messages, error.message]:
        assert TOKEN not in text and "access_token" not in text and "s3cr3tpw" not in text
        assert appsecret_proof(SECRET, TOKEN) not in text


async def test_paging_next_on_another_version_under_the_prefix_is_followed(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    link = "https://127.0.0.1:{port}/graph/v99.0/1/message_templates"
    runner, paths = await hostile_meta(link, tls[0])
    graph_url = f"https://127.0.0.1:{bound_port(runner)}/graph/v25.0"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls[1])) as session:
            listed = await GraphClient(session, graph_url, SECRET).list_templates(WABA, TOKEN)
    finally:
        await runner.cleanup()
    assert [t.id for t in listed] == ["1", "2"]
    assert paths[1] == "/graph/v99.0/1/message_templates"


# --- template mapping -------------------------------------------------------------------


async def test_get_template_maps_fields(sim: Simulator, client: GraphClient) -> None:
    sim.add_templates(
        WABA,
        [
            template("1387372356726668", category="UTILITY", quality_score="YELLOW"),
            template("1387372356726670", status="REJECTED", rejected_reason="INVALID_FORMAT"),
        ],
    )

    approved = await client.get_template("1387372356726668", TOKEN)
    rejected = await client.get_template("1387372356726670", TOKEN)

    assert approved == GraphTemplate(
        id="1387372356726668",
        name="order_update",
        language="pt_BR",
        status="APPROVED",
        category="UTILITY",
        rejected_reason=None,
        quality_score="YELLOW",
    )
    assert (rejected.status, rejected.rejected_reason) == ("REJECTED", "INVALID_FORMAT")


async def test_int_ids_become_exact_strings(sim: Simulator, client: GraphClient) -> None:
    big = 2**53 + 1  # not representable as a float
    sim.add_templates(WABA, [template(big), template("1387372356726669", name="b")])

    listed = await client.list_templates(WABA, TOKEN)

    assert [t.id for t in listed] == [str(big), "1387372356726669"]
    assert (await client.get_template(str(big), TOKEN)).id == str(big)


def test_from_graph_reads_fixture_shapes() -> None:
    page = json.loads((FIXTURES / "graph-templates-page1.json").read_text())
    first = GraphTemplate.from_graph(page["data"][0])
    assert (first.id, first.quality_score, first.rejected_reason) == (
        "1387372356726668",
        "GREEN",
        None,
    )
    plain = GraphTemplate.from_graph(template(7, quality_score="RED", category=None))
    assert (plain.id, plain.quality_score, plain.category) == ("7", "RED", None)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"name": "a", "language": "en", "status": "APPROVED"},
        template(1.387e15),
        template(True),
        template(""),
        {**template("1"), "status": None},
        {**template("1"), "language": 5},
    ],
)
def test_from_graph_rejects_bad_templates(data: Any) -> None:
    with pytest.raises(GraphError) as info:
        GraphTemplate.from_graph(data)
    assert info.value.kind == "invalid_response"


# --- errors -----------------------------------------------------------------------------


async def test_expired_token_is_token_invalid_and_not_retried(
    sim: Simulator, client: GraphClient
) -> None:
    sim.fail(WABA, "190", sticky=True)
    with pytest.raises(GraphError) as info:
        await client.list_templates(WABA, TOKEN)
    err = info.value
    assert (err.kind, err.code, err.subcode, err.http_status) == ("token_invalid", 190, 463, 400)
    assert err.fbtrace_id and client.calls == 1
    assert err.to_detail() == {
        "code": 190,
        "subcode": 463,
        "kind": "token_invalid",
        "detail": err.message,
        "fbtrace_id": err.fbtrace_id,
    }


async def test_unknown_token_is_token_invalid(client: GraphClient) -> None:
    with pytest.raises(GraphError) as info:
        await client.list_templates(WABA, "not-a-token")
    assert (info.value.kind, info.value.code, info.value.http_status) == ("token_invalid", 190, 401)


async def test_token_of_another_waba_is_permission(client: GraphClient) -> None:
    with pytest.raises(GraphError) as info:
        await client.list_templates(WABA, OTHER_TOKEN)
    assert (info.value.kind, info.value.code) == ("permission", 200)


@pytest.mark.parametrize("http_status", [400, 429])
async def test_throttling_reads_regain_time_and_is_not_retried(
    sim: Simulator, client: GraphClient, sleeps: Sleeps, http_status: int
) -> None:
    sim.fail(WABA, "80008", sticky=True, regain_min=7, http_status=http_status)
    with pytest.raises(GraphError) as info:
        await client.list_templates(WABA, TOKEN)
    assert (info.value.kind, info.value.code) == ("throttled", 80008)
    assert info.value.regain_access_s == 7 * 60
    assert client.calls == 1 and sleeps.delays == []
    assert client.last_usage is not None and client.last_usage.call_count_pct == 100


async def test_throttling_without_hint_uses_default(sim: Simulator, client: GraphClient) -> None:
    sim.fail(WABA, "error", code=4, message="(#4) Application request limit reached")
    with pytest.raises(GraphError) as info:
        await client.get(WABA, TOKEN)
    assert info.value.kind == "throttled"
    assert info.value.regain_access_s == DEFAULT_REGAIN_ACCESS_S


@pytest.mark.parametrize("meta_body", [False, True])
async def test_5xx_is_retried_then_succeeds(
    sim: Simulator, client: GraphClient, sleeps: Sleeps, meta_body: bool
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 3))
    sim.fail(WABA, "5xx", times=2, http_status=503, meta_body=meta_body)

    assert len(await client.list_templates(WABA, TOKEN)) == 3

    assert client.calls == 3
    assert len(sleeps.delays) == 2
    assert 0.25 <= sleeps.delays[0] <= 0.5 and 0.5 <= sleeps.delays[1] <= 1.0


async def test_5xx_gives_up_after_max_attempts(
    sim: Simulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    sim.fail(None, "5xx", sticky=True)
    client = GraphClient(session, url, SECRET, max_attempts=4, sleep=sleeps)
    with pytest.raises(GraphError) as info:
        await client.get_template("1", TOKEN)
    assert (info.value.kind, info.value.http_status) == ("transient", 500)
    assert client.calls == 4 == len(sim.calls)
    assert len(sleeps.delays) == 3


async def test_slow_response_times_out_as_network_error(
    sim: Simulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    sim.fail(WABA, "slow", sticky=True, delay_s=1.0)
    client = GraphClient(session, url, SECRET, timeout_s=0.1, max_attempts=2, sleep=sleeps)
    with pytest.raises(GraphError) as info:
        await client.get(WABA, TOKEN)
    assert info.value.kind == "network"
    assert client.calls == 2


async def test_one_slow_response_is_retried(
    sim: Simulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    sim.fail(WABA, "slow", delay_s=1.0)
    client = GraphClient(session, url, SECRET, timeout_s=0.1, sleep=sleeps)
    assert (await client.get(WABA, TOKEN))["name"] == "Acme"
    assert client.calls == 2


async def test_connection_refused_is_network_error(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = GraphClient(session, "http://127.0.0.1:9/v25.0", SECRET, sleep=sleeps)
    with pytest.raises(GraphError) as info:
        await client.get(WABA, TOKEN)
    assert info.value.kind == "network"
    assert client.calls == 3


@pytest.mark.parametrize(
    "body",
    [
        '{"data": [{"id": "1", "name": ',
        "<html>oops</html>",
        "[1, 2]",
        '{"paging": {}}',
        '{"data": {"id": "1"}}',
    ],
)
async def test_malformed_responses_are_invalid_and_not_retried(
    sim: Simulator, client: GraphClient, body: str
) -> None:
    sim.fail(WABA, "malformed", body=body)
    with pytest.raises(GraphError) as info:
        await client.list_templates(WABA, TOKEN)
    assert info.value.kind == "invalid_response"
    assert client.calls == 1


async def test_invalid_cursor_is_error_131059(client: GraphClient) -> None:
    with pytest.raises(GraphError) as info:
        await client.get(f"{WABA}/message_templates", TOKEN, {"after": "bm90LWEtY3Vyc29y"})
    assert (info.value.kind, info.value.code, info.value.http_status) == ("other", 131059, 400)


async def test_unknown_template_is_code_100_subcode_33(client: GraphClient) -> None:
    with pytest.raises(GraphError) as info:
        await client.get_template("999", TOKEN)
    assert (info.value.kind, info.value.code, info.value.subcode) == ("other", 100, 33)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (4, "throttled"),
        (613, "throttled"),
        (130429, "throttled"),
        (102, "token_invalid"),
        (10, "permission"),
        (299, "permission"),
        (1, "transient"),
        (100, "other"),
        (None, "other"),
    ],
)
def test_classify(code: int | None, kind: str) -> None:
    assert classify(code) == kind


def test_is_transient_flag_makes_transient_but_never_overrides_throttling() -> None:
    assert classify(100, is_transient=True) == "transient"
    assert classify(80008, is_transient=True) == "throttled"


# --- appsecret_proof --------------------------------------------------------------------


async def test_appsecret_proof_wrong_secret_rejected(
    session: aiohttp.ClientSession, url: str
) -> None:
    client = GraphClient(session, url, "wrong-secret")
    with pytest.raises(GraphError) as info:
        await client.get(WABA, TOKEN)
    assert info.value.code == 100
    assert info.value.message == "Invalid appsecret_proof provided in the API argument"


async def test_appsecret_proof_missing_rejected(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(GraphError) as info:
        await GraphClient(session, url, None).get(WABA, TOKEN)
    assert info.value.code == 100


async def test_appsecret_proof_right_secret_accepted(client: GraphClient) -> None:
    assert await client.get(WABA, TOKEN) == {"id": WABA, "name": "Acme"}


def test_appsecret_proof_value() -> None:
    # echo -n token | openssl dgst -sha256 -hmac secret
    assert appsecret_proof("secret", "token") == (
        "e941110e3d2bfe82621f0e3e1434730d7305d106c5f68c87165d0b27a4611a4a"
    )


# --- generic calls ----------------------------------------------------------------------


async def test_subscribed_apps_get_and_post(client: GraphClient) -> None:
    path = f"{WABA}/subscribed_apps"
    assert await client.get(path, TOKEN) == {"data": []}
    assert await client.post(path, TOKEN) == {"success": True}
    listed = await client.get(path, TOKEN)
    assert listed["data"][0]["whatsapp_business_api_data"]["name"] == "template-sync"


# --- usage headers ----------------------------------------------------------------------


def test_parse_usage_reads_fixture_header() -> None:
    header = (FIXTURES / "graph-header-business-use-case-usage.json").read_text()
    usage = parse_usage(
        {
            "X-Business-Use-Case-Usage": header,
            "X-App-Usage": '{"call_count": 12, "total_time": 40, "total_cputime": 3}',
        }
    )
    assert usage is not None
    assert (usage.call_count_pct, usage.total_time_pct, usage.regain_access_s) == (100, 40, 420)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "nope",
        "[]",
        '{"1": 5}',
        '{"1": [1, null]}',
        '{"1": [{"call_count": "x", "total_time": NaN}]}',
    ],
)
def test_parse_usage_ignores_garbage(header: str) -> None:
    usage = parse_usage({"X-Business-Use-Case-Usage": header})
    assert usage is None or (usage.call_count_pct, usage.regain_access_s) == (0, None)


@given(st.text(), st.text())
def test_parse_usage_never_raises(business: str, app: str) -> None:
    parse_usage({"X-Business-Use-Case-Usage": business, "X-App-Usage": app})


async def test_usage_is_exposed_after_calls(sim: Simulator, client: GraphClient) -> None:
    sim.budget_per_hour = 10
    await client.get(WABA, TOKEN)
    await client.get(WABA, TOKEN)
    assert client.last_usage is not None
    assert client.last_usage.call_count_pct == 20


# --- secrets never logged ---------------------------------------------------------------


async def test_no_token_in_logs_or_errors(
    sim: Simulator, client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.add_templates(WABA, make_templates(WABA, 250))
    await client.list_templates(WABA, TOKEN)  # paging.next links carry access_token
    sim.fail(WABA, "5xx", times=1)
    sim.fail(WABA, "error", code=100, message=f"bad token {TOKEN} access_token={TOKEN}")
    with pytest.raises(GraphError) as info:
        await client.get(WABA, TOKEN)

    assert TOKEN not in info.value.message and TOKEN not in str(info.value)
    proof = appsecret_proof(SECRET, TOKEN)
    messages = [r.getMessage() for r in caplog.records]
    assert any(WABA in m for m in messages)
    for message in messages:
        assert TOKEN not in message and "access_token=" not in message and proof not in message


# --- template writes --------------------------------------------------------------------


def new_template(
    name: str = "order_update", language: str = "en_US", **extra: Any
) -> dict[str, Any]:
    """A create body as the service sends it."""
    body = [{"type": "BODY", "text": "Your order {{1}} has shipped."}]
    return {"name": name, "language": language, "category": "UTILITY", "components": body, **extra}


def stored(sim: Simulator, template_id: str) -> dict[str, Any]:
    """The simulator's copy of a template (Meta's side)."""
    return next(t for t in sim.templates(WABA) if str(t["id"]) == template_id)


def graph_calls(sim: Simulator, method: str) -> list[str]:
    return [c.path for c in sim.calls if c.method == method]


async def test_create_template_answers_id_status_and_category(
    sim: Simulator, client: GraphClient
) -> None:
    created = await client.create_template(
        WABA, TOKEN, new_template(allow_category_change=False, parameter_format="POSITIONAL")
    )

    assert created == CreatedTemplate(id=created.id, status="PENDING", category="UTILITY")
    assert created.id.isdigit()
    meta = stored(sim, created.id)
    assert (meta["name"], meta["language"], meta["status"]) == ("order_update", "en_US", "PENDING")
    assert meta["components"] == new_template()["components"]
    assert created.id in sim.state.fixed_category  # a JSON false reached Meta as false
    assert graph_calls(sim, "POST") == [f"/v25.0/{WABA}/message_templates"]


async def test_create_answer_with_an_int_id_keeps_every_digit(
    sim: Simulator, client: GraphClient
) -> None:
    sim.fail(WABA, "malformed", body='{"id": 9007199254740993, "status": "APPROVED"}')
    created = await client.create_template(WABA, TOKEN, new_template())
    assert created == CreatedTemplate(id="9007199254740993", status="APPROVED", category=None)


@pytest.mark.parametrize(
    "answer",
    [
        "[]",
        '{"status": "PENDING", "category": "UTILITY"}',
        '{"id": 1.387e15, "status": "PENDING"}',
        '{"id": true, "status": "PENDING"}',
        '{"id": "../1", "status": "PENDING"}',
        '{"id": "1", "status": ""}',
        '{"id": "1", "status": 5}',
        '{"id": "1", "status": "pending"}',
        '{"id": "1", "status": "PENDING", "category": ["UTILITY"]}',
    ],
)
async def test_odd_create_answers_are_invalid_and_not_retried(
    sim: Simulator, client: GraphClient, answer: str
) -> None:
    sim.fail(WABA, "malformed", body=answer)
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())
    assert info.value.kind == "invalid_response"
    assert client.calls == 1


async def test_name_in_use_or_being_deleted_is_a_conflict(
    sim: Simulator, client: GraphClient
) -> None:
    first = await client.create_template(WABA, TOKEN, new_template())
    with pytest.raises(GraphError) as in_use:
        await client.create_template(WABA, TOKEN, new_template())
    sim.set_status(first.id, "APPROVED")
    await client.delete_template(WABA, TOKEN, "order_update", first.id)
    with pytest.raises(GraphError) as held:
        await client.create_template(WABA, TOKEN, new_template())

    for info, subcode in ((in_use, 2388023), (held, 2388024)):
        error = info.value
        assert (error.kind, error.code, error.subcode, error.http_status) == (
            "other", 100, subcode, 400,
        )  # fmt: skip
        assert is_name_taken(error)
        assert error.user_title and error.user_message and error.fbtrace_id
        assert error.to_detail()["subcode"] == subcode
    assert "being deleted" in held.value.user_title.lower()
    assert len([t for t in sim.templates(WABA) if t["name"] == "order_update"]) == 1


async def test_template_meta_refuses_is_other_with_its_reason(client: GraphClient) -> None:
    header_only = new_template(components=[{"type": "HEADER", "format": "TEXT", "text": "Hi"}])
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, header_only)
    error = info.value
    assert (error.kind, error.code, error.subcode) == ("other", 100, 2388044)
    assert error.user_message == "A template has exactly one BODY and at most one BODY."
    assert not is_name_taken(error) and not is_template_not_found(error)
    assert error.to_detail() == {
        "code": 100,
        "subcode": 2388044,
        "kind": "other",
        "detail": "Invalid parameter",
        "fbtrace_id": error.fbtrace_id,
    }


async def test_hourly_create_limit_is_throttled_with_its_regain_time(
    sim: Simulator, client: GraphClient, sleeps: Sleeps
) -> None:
    for i in range(100):  # Meta's limit per WABA per hour
        await client.create_template(WABA, TOKEN, new_template(f"bulk_{i}"))
    with pytest.raises(ThrottledError) as info:
        await client.create_template(WABA, TOKEN, new_template("one_more"))
    assert (info.value.kind, info.value.code) == ("throttled", 80008)
    assert info.value.regain_access_s == 60 * 60  # the oldest create leaves the hour then
    assert client.calls == 101 and sleeps.delays == []
    assert len(sim.templates(WABA)) == 100


@pytest.mark.parametrize(
    ("token", "fault", "kind", "code"),
    [
        (TOKEN, "190", "token_invalid", 190),
        ("not-a-token", None, "token_invalid", 190),
        (OTHER_TOKEN, None, "permission", 200),
    ],
)
async def test_create_with_a_bad_token_is_refused(
    sim: Simulator, client: GraphClient, token: str, fault: str | None, kind: str, code: int
) -> None:
    if fault is not None:
        sim.fail(WABA, fault)
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, token, new_template())
    assert (info.value.kind, info.value.code) == (kind, code)
    assert sim.templates(WABA) == [] and client.calls == 1


@pytest.mark.parametrize("meta_body", [False, True])
async def test_create_is_not_retried_on_5xx(
    sim: Simulator, client: GraphClient, sleeps: Sleeps, meta_body: bool
) -> None:
    sim.fail(WABA, "5xx", http_status=503, meta_body=meta_body)
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())
    assert (info.value.kind, info.value.http_status, info.value.attempts) == ("transient", 503, 1)
    assert client.calls == 1 and sleeps.delays == []
    assert len(graph_calls(sim, "POST")) == 1


async def test_create_with_meta_unreachable_is_network_not_timeout(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = GraphClient(session, "http://127.0.0.1:9/v25.0", SECRET, sleep=sleeps)
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())
    assert (info.value.kind, info.value.timed_out) == ("network", False)
    assert client.calls == 1 and sleeps.delays == []


async def test_create_that_times_out_is_not_retried(
    sim: Simulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    sim.fail(WABA, "slow", delay_s=2.0)
    client = GraphClient(session, url, SECRET, timeout_s=0.1, sleep=sleeps)

    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())

    error = info.value
    assert (error.kind, error.timed_out, error.message) == ("network", True, "request timed out")
    assert client.calls == 1 and sleeps.delays == []
    await eventually(lambda: graph_calls(sim, "POST"), message="Meta never saw the create")
    assert len(sim.calls) == 1


async def test_create_whose_answer_was_lost_is_found_by_name_and_language(
    sim: LateSimulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    sim.late = 1
    client = GraphClient(session, url, SECRET, timeout_s=0.2, sleep=sleeps)
    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())
    assert info.value.timed_out and client.calls == 1

    found = await client.find_template(WABA, TOKEN, "order_update", "en_US")

    (meta,) = sim.templates(WABA)
    assert found is not None and (found.id, found.status) == (str(meta["id"]), "PENDING")
    with pytest.raises(GraphError) as again:  # what a retry of the create would have met
        await client.create_template(WABA, TOKEN, new_template())
    assert is_name_taken(again.value)


@pytest.mark.parametrize("operation", ["create", "edit", "delete"])
async def test_writes_carry_appsecret_proof(
    sim: Simulator, session: aiohttp.ClientSession, url: str, operation: str
) -> None:
    (existing,) = make_templates(WABA, 1)
    sim.add_templates(WABA, [existing])
    before = sim.templates(WABA)
    client = GraphClient(session, url, "wrong-secret", sleep=Sleeps())
    writes = {
        "create": lambda: client.create_template(WABA, TOKEN, new_template()),
        "edit": lambda: client.edit_template(existing["id"], TOKEN, {"category": "MARKETING"}),
        "delete": lambda: client.delete_template(WABA, TOKEN, existing["name"], existing["id"]),
    }
    with pytest.raises(GraphError) as info:
        await writes[operation]()
    assert info.value.code == 100
    assert info.value.message == "Invalid appsecret_proof provided in the API argument"
    assert sim.templates(WABA) == before


async def test_edit_template_sends_the_changes(sim: Simulator, client: GraphClient) -> None:
    sim.create_status = "APPROVED"
    created = await client.create_template(WABA, TOKEN, new_template())
    components = [{"type": "BODY", "text": "Order {{1}} is on its way."}]

    assert await client.edit_template(created.id, TOKEN, {"components": components}) is None

    meta = stored(sim, created.id)
    assert (meta["components"], meta["status"]) == (components, "PENDING")
    assert graph_calls(sim, "POST")[-1] == f"/v25.0/{created.id}"


async def test_edit_refused_by_meta_keeps_its_reason(sim: Simulator, client: GraphClient) -> None:
    created = await client.create_template(WABA, TOKEN, new_template())  # PENDING
    with pytest.raises(GraphError) as info:
        await client.edit_template(created.id, TOKEN, {"category": "MARKETING"})
    assert (info.value.kind, info.value.code, info.value.subcode) == ("other", 100, 2388045)
    assert info.value.user_title == "Template can't be edited"
    assert stored(sim, created.id)["category"] == "UTILITY"


@pytest.mark.parametrize(
    ("fault", "options", "kind"),
    [
        ("5xx", {}, "transient"),
        ("slow", {"delay_s": 2.0}, "network"),
        ("malformed", {"body": '{"success": false}'}, "invalid_response"),
        ("malformed", {"body": "{}"}, "invalid_response"),
    ],
)
async def test_edit_is_not_retried_and_needs_meta_to_confirm(
    sim: Simulator,
    session: aiohttp.ClientSession,
    url: str,
    sleeps: Sleeps,
    fault: str,
    options: dict[str, Any],
    kind: str,
) -> None:
    sim.create_status = "APPROVED"
    client = GraphClient(session, url, SECRET, timeout_s=0.2, sleep=sleeps)
    created = await client.create_template(WABA, TOKEN, new_template())
    sim.fail(created.id, fault, **options)
    with pytest.raises(GraphError) as info:
        await client.edit_template(created.id, TOKEN, {"category": "MARKETING"})
    assert info.value.kind == kind
    assert client.calls == 2 and sleeps.delays == []


async def test_delete_template_removes_one_language(sim: Simulator, client: GraphClient) -> None:
    english = await client.create_template(WABA, TOKEN, new_template(language="en_US"))
    portuguese = await client.create_template(WABA, TOKEN, new_template(language="pt_BR"))

    assert await client.delete_template(WABA, TOKEN, "order_update", english.id) is None

    assert stored(sim, english.id)["status"] == "DELETED"
    assert stored(sim, portuguese.id)["status"] == "PENDING"
    assert graph_calls(sim, "DELETE") == [f"/v25.0/{WABA}/message_templates"]


async def test_delete_is_retried_on_5xx(
    sim: Simulator, client: GraphClient, sleeps: Sleeps
) -> None:
    created = await client.create_template(WABA, TOKEN, new_template())
    sim.fail(WABA, "5xx", times=2)
    await client.delete_template(WABA, TOKEN, "order_update", created.id)
    assert stored(sim, created.id)["status"] == "DELETED"
    assert len(graph_calls(sim, "DELETE")) == 3 and len(sleeps.delays) == 2


async def test_delete_whose_answer_was_lost_is_done_when_the_retry_finds_nothing(
    sim: LateSimulator, session: aiohttp.ClientSession, url: str, sleeps: Sleeps
) -> None:
    client = GraphClient(session, url, SECRET, timeout_s=0.2, sleep=sleeps)
    created = await client.create_template(WABA, TOKEN, new_template())
    sim.late = 1

    await client.delete_template(WABA, TOKEN, "order_update", created.id)

    assert stored(sim, created.id)["status"] == "DELETED"
    assert client.calls == 3 and len(sleeps.delays) == 1  # create, delete, delete again


@pytest.mark.parametrize("answer", ['{"success": false}', '{"success": "true"}', "{}"])
async def test_delete_needs_meta_to_confirm(
    sim: Simulator, client: GraphClient, answer: str
) -> None:
    sim.fail(WABA, "malformed", body=answer)
    with pytest.raises(GraphError) as info:
        await client.delete_template(WABA, TOKEN, "order_update", "1387372356726668")
    assert info.value.kind == "invalid_response" and client.calls == 1


async def test_delete_of_an_unknown_template_is_not_found(
    client: GraphClient, sleeps: Sleeps
) -> None:
    with pytest.raises(GraphError) as info:
        await client.delete_template(WABA, TOKEN, "order_update", "1387372356726668")
    assert is_template_not_found(info.value) and info.value.attempts == 1
    assert (info.value.kind, info.value.subcode) == ("other", 2593002)
    assert client.calls == 1 and sleeps.delays == []


async def test_delete_that_keeps_failing_gives_up_with_the_error(
    sim: Simulator, client: GraphClient
) -> None:
    sim.fail(WABA, "5xx", sticky=True)
    with pytest.raises(GraphError) as info:
        await client.delete_template(WABA, TOKEN, "order_update", "1387372356726668")
    assert (info.value.kind, info.value.attempts) == ("transient", 3)


# --- find_template ----------------------------------------------------------------------


def named(template_id: str, name: str, language: str, status: str = "APPROVED") -> dict[str, Any]:
    return {"id": template_id, "name": name, "language": language, "status": status}


@pytest.mark.parametrize(
    ("name", "language", "expected"),
    [
        ("order", "en_US", "2"),  # not the DELETED one, nor order_update or reorder
        ("order", "pt_BR", "3"),
        ("order_update", "en_US", "4"),
        ("order", "en", None),  # languages match exactly
        ("orde", "en_US", None),  # Graph's name filter matches parts of names: we do not
        ("reorder", "pt_BR", None),
    ],
)
async def test_find_template_matches_name_and_language_exactly(
    sim: Simulator,
    session: aiohttp.ClientSession,
    url: str,
    name: str,
    language: str,
    expected: str | None,
) -> None:
    sim.add_templates(
        WABA,
        [
            named("1", "order", "en_US", "DELETED"),
            named("4", "order_update", "en_US"),
            named("5", "reorder", "en_US"),
            named("3", "order", "pt_BR", "REJECTED"),
            named("6", "order", "en_GB"),
            named("2", "order", "en_US", "PENDING"),
        ],
    )
    client = GraphClient(session, url, SECRET, page_limit=2)  # the match is on a later page

    found = await client.find_template(WABA, TOKEN, name, language)

    assert (found.id if found else None) == expected


async def test_find_template_asks_graph_to_filter_by_name(
    sim: Simulator, client: GraphClient
) -> None:
    sim.add_templates(WABA, [*make_templates(WABA, 250), named("7", "order", "es")])
    found = await client.find_template(WABA, TOKEN, "order", "es")
    assert found is not None and found.id == "7"
    assert client.calls == 1  # 251 templates, but one page: Graph filtered them


async def test_find_template_refuses_two_live_matches(sim: Simulator, client: GraphClient) -> None:
    sim.add_templates(WABA, [named("1", "order", "en_US"), named("2", "order", "en_US")])
    with pytest.raises(GraphError) as info:
        await client.find_template(WABA, TOKEN, "order", "en_US")
    assert info.value.kind == "invalid_response"


# --- Meta's error details ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "subcode", "taken", "not_found"),
    [
        (100, 2388023, True, False),
        (100, 2388024, True, False),
        (100, 2593002, False, True),
        (100, 2388044, False, False),
        (100, None, False, False),
        (200, 2388023, False, False),
        (None, 2388024, False, False),
    ],
)
def test_name_taken_and_not_found_key_on_code_and_subcode(
    code: int | None, subcode: int | None, taken: bool, not_found: bool
) -> None:
    error = GraphError("other", "Invalid parameter", code=code, subcode=subcode)
    assert (is_name_taken(error), is_template_not_found(error)) == (taken, not_found)


async def test_meta_texts_in_write_errors_are_redacted_and_bounded(
    sim: Simulator, client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    error = {
        "message": f"Invalid parameter access_token={TOKEN}",
        "type": "OAuthException",
        "code": 100,
        "error_subcode": "2388023",
        "error_user_title": f"Token {TOKEN} used",
        "error_user_msg": f"appsecret_proof={appsecret_proof(SECRET, TOKEN)} " + "x" * 5000,
        "fbtrace_id": f"A{TOKEN}",
    }
    sim.fail(WABA, "malformed", http_status=400, body=json.dumps({"error": error}))

    with pytest.raises(GraphError) as info:
        await client.create_template(WABA, TOKEN, new_template())

    err = info.value
    assert is_name_taken(err)  # a subcode sent as a string still counts
    assert err.user_title == "Token *** used" and err.fbtrace_id == "A***"
    assert err.user_message is not None and len(err.user_message) == MAX_META_TEXT_CHARS
    assert err.user_message.startswith("appsecret_proof=*** x")
    texts = [err.message, str(err), json.dumps(err.to_detail()), err.user_message]
    texts += [r.getMessage() for r in caplog.records]
    proof = appsecret_proof(SECRET, TOKEN)
    for text in texts:
        assert TOKEN not in text and proof not in text
