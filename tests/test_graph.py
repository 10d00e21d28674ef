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

from service.graph import GraphClient, GraphTemplate, appsecret_proof
from service.graph_errors import DEFAULT_REGAIN_ACCESS_S, GraphError, classify, parse_usage
from service.simulator import Simulator, base_url, bound_port, make_templates, serve
from tests.certificates import issue
from tests.conftest import FIXTURES

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


@pytest.fixture
def sim() -> Simulator:
    sim = Simulator(app_secret=SECRET)
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
