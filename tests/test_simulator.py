"""The Graph simulator over real loopback HTTP: Graph routes, faults and control API."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from service.simulator import Fault, Simulator, base_url, bound_port, make_templates, serve
from service.simulator_graph import DEFAULT_LIMIT, MAX_LIMIT

WABA = "102290129340398"
OTHER_WABA = "200000000000001"
TOKEN = "sim-token-abc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def sim() -> Simulator:
    sim = Simulator()
    sim.add_waba(WABA, TOKEN, name="Acme")
    sim.add_waba(OTHER_WABA, "other-token")
    return sim


@pytest.fixture
async def root(sim: Simulator) -> AsyncIterator[str]:
    """Server root (no version), e.g. http://127.0.0.1:41234."""
    runner = await serve(sim)
    try:
        assert bound_port(runner) > 0
        yield base_url(runner, "").rstrip("/")
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, Mapping[str, str]]:
    async with http.request(
        method, url, headers=AUTH if headers is None else headers, **kwargs
    ) as resp:
        text = await resp.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return resp.status, body, resp.headers


def templates_url(root: str, waba: str = WABA) -> str:
    return f"{root}/v25.0/{waba}/message_templates"


# --- listing ----------------------------------------------------------------------------


async def test_default_page_size_cursors_and_next(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 30))
    status, body, _ = await call(http, "GET", templates_url(root))
    assert status == 200 and len(body["data"]) == DEFAULT_LIMIT
    assert set(body["paging"]["cursors"]) == {"before", "after"}
    next_url = body["paging"]["next"]
    assert next_url.startswith(f"{root}/v25.0/{WABA}/message_templates?")
    assert f"access_token={TOKEN}" in next_url  # like Meta's links

    status, last, _ = await call(http, "GET", next_url, headers={})  # token from the query
    assert status == 200 and len(last["data"]) == 5
    assert "next" not in last["paging"]


async def test_limit_is_capped(sim: Simulator, http: aiohttp.ClientSession, root: str) -> None:
    sim.add_templates(WABA, make_templates(WABA, MAX_LIMIT + 5))
    _, body, _ = await call(http, "GET", templates_url(root), params={"limit": "5000"})
    assert len(body["data"]) == MAX_LIMIT and "next" in body["paging"]


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
async def test_bad_limit_is_code_100(http: aiohttp.ClientSession, root: str, limit: str) -> None:
    status, body, _ = await call(http, "GET", templates_url(root), params={"limit": limit})
    assert (status, body["error"]["code"]) == (400, 100)


@pytest.mark.parametrize("cursor", ["!!!", "bm9wZQ", "c2ltOi0x", "c2ltOmFiYw"])
async def test_invalid_cursor_is_131059(
    http: aiohttp.ClientSession, root: str, cursor: str
) -> None:
    status, body, _ = await call(http, "GET", templates_url(root), params={"after": cursor})
    assert (status, body["error"]["code"]) == (400, 131059)


async def test_fields_projection_and_quality_object(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 1))
    params = {"fields": "status,quality_score,rejected_reason"}
    _, body, _ = await call(http, "GET", templates_url(root), params=params)
    item = body["data"][0]
    assert set(item) == {"id", "status", "quality_score", "rejected_reason"}
    assert item["quality_score"]["score"] == "GREEN" and "date" in item["quality_score"]
    assert item["rejected_reason"] == "NONE"


async def test_status_and_name_filters(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 10, pending=4))
    _, body, _ = await call(http, "GET", templates_url(root), params={"status": "pending"})
    assert len(body["data"]) == 4
    _, body, _ = await call(http, "GET", templates_url(root), params={"name": "template_0000"})
    assert len(body["data"]) == 10


async def test_empty_waba_has_no_paging(http: aiohttp.ClientSession, root: str) -> None:
    assert (await call(http, "GET", templates_url(root)))[1] == {"data": []}


# --- auth -------------------------------------------------------------------------------


async def test_missing_or_unknown_token_is_190(http: aiohttp.ClientSession, root: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        status, body, _ = await call(http, "GET", templates_url(root), headers=headers)
        assert status == 401
        assert set(body["error"]) == {"message", "type", "code", "fbtrace_id"}
        assert body["error"]["code"] == 190


async def test_token_of_other_waba_is_permission_error(
    http: aiohttp.ClientSession, root: str
) -> None:
    status, body, _ = await call(http, "GET", templates_url(root, OTHER_WABA))
    assert (status, body["error"]["code"]) == (403, 200)


async def test_appsecret_proof_checked(http: aiohttp.ClientSession) -> None:
    sim = Simulator(app_secret="s3cret")
    sim.add_waba(WABA, TOKEN)
    runner = await serve(sim)
    url = f"{base_url(runner)}/{WABA}"
    right = hmac.new(b"s3cret", TOKEN.encode(), hashlib.sha256).hexdigest()
    try:
        missing = await call(http, "GET", url)
        wrong = await call(http, "GET", url, params={"appsecret_proof": "00" * 32})
        ok = await call(http, "GET", url, params={"appsecret_proof": right})
    finally:
        await runner.cleanup()
    assert missing[1]["error"]["code"] == 100
    assert wrong[1]["error"] == {
        **wrong[1]["error"],
        "code": 100,
        "message": "Invalid appsecret_proof provided in the API argument",
    }
    assert ok[:2] == (200, {"id": WABA, "name": f"WABA {WABA}"})


# --- objects and subscriptions ----------------------------------------------------------


async def test_get_objects(sim: Simulator, http: aiohttp.ClientSession, root: str) -> None:
    sim.add_templates(WABA, [{"id": 42, "name": "n", "language": "en", "status": "PAUSED"}])
    assert (await call(http, "GET", f"{root}/v25.0/{WABA}"))[1] == {"id": WABA, "name": "Acme"}
    _, body, _ = await call(http, "GET", f"{root}/v25.0/42", params={"fields": "status"})
    assert body == {"id": 42, "status": "PAUSED"}  # ids keep the JSON type they were given
    status, body, _ = await call(http, "GET", f"{root}/v25.0/43")
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    assert "Object with ID '43' does not exist" in body["error"]["message"]


async def test_subscribed_apps(sim: Simulator, http: aiohttp.ClientSession, root: str) -> None:
    url = f"{root}/v25.0/{WABA}/subscribed_apps"
    assert (await call(http, "GET", url))[1] == {"data": []}
    assert (await call(http, "POST", url))[1] == {"success": True}
    _, body, _ = await call(http, "GET", url)
    assert body["data"][0]["whatsapp_business_api_data"] == {
        "id": sim.app_id,
        "name": "template-sync",
    }
    assert sim.is_subscribed(WABA) and not sim.is_subscribed(OTHER_WABA)


# --- faults -----------------------------------------------------------------------------


async def test_fault_times_then_recovers(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.fail(WABA, "5xx", times=2, http_status=503)
    statuses = [(await call(http, "GET", templates_url(root)))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]


async def test_sticky_fault_until_cleared_and_scoped_to_target(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.fail(WABA, "190", sticky=True)
    for _ in range(3):
        status, body, _ = await call(http, "GET", templates_url(root))
        assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 190, 463)
    other = await call(
        http,
        "GET",
        templates_url(root, OTHER_WABA),
        headers={"Authorization": "Bearer other-token"},
    )
    assert other[0] == 200
    sim.clear_faults()
    assert (await call(http, "GET", templates_url(root)))[0] == 200


async def test_template_fault_matches_its_waba(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.add_templates(WABA, make_templates(WABA, 1, start_id=77))
    sim.fail(WABA, "error", code=2, is_transient=True, http_status=500)
    status, body, _ = await call(http, "GET", f"{root}/v25.0/77")
    assert (status, body["error"]["code"], body["error"]["is_transient"]) == (500, 2, True)


async def test_throttle_fault_has_usage_header(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.fail(None, "80008", regain_min=7)
    status, body, headers = await call(http, "GET", templates_url(root))
    assert (status, body["error"]["code"]) == (400, 80008)
    usage = json.loads(headers["X-Business-Use-Case-Usage"])
    assert usage[WABA][0]["estimated_time_to_regain_access"] == 7
    assert usage[WABA][0]["call_count"] == 100


async def test_plain_5xx_and_malformed_bodies(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.fail(WABA, "5xx")
    sim.fail(WABA, "malformed")
    assert (await call(http, "GET", templates_url(root)))[:2] == (500, "Internal Server Error")
    status, body, _ = await call(http, "GET", templates_url(root))
    assert status == 200 and isinstance(body, str)  # truncated JSON


async def test_slow_fault_delays(sim: Simulator, http: aiohttp.ClientSession, root: str) -> None:
    sim.fail(WABA, "slow", delay_s=0.2)
    started = time.monotonic()
    assert (await call(http, "GET", templates_url(root)))[0] == 200
    assert time.monotonic() - started >= 0.2


def test_unknown_fault_kind_rejected(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.fail(WABA, "explode")
    with pytest.raises(ValueError):
        Fault(kind="5xx", remaining=0)


# --- usage headers and call log ---------------------------------------------------------


async def test_usage_headers_grow_with_calls(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.budget_per_hour = 10
    counts = []
    for _ in range(3):
        _, _, headers = await call(http, "GET", templates_url(root))
        counts.append(json.loads(headers["X-Business-Use-Case-Usage"])[WABA][0]["call_count"])
        assert set(json.loads(headers["X-App-Usage"])) == {
            "call_count",
            "total_time",
            "total_cputime",
        }
    assert counts == [10, 20, 30]


async def test_call_log_has_no_tokens_or_queries(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    await call(http, "GET", templates_url(root), params={"access_token": TOKEN}, headers={})
    await call(http, "GET", f"{root}/v25.0/{WABA}", headers={"Authorization": "Bearer bad"})
    first, second = sim.calls
    assert (first.method, first.path, first.object_id, first.status) == (
        "GET",
        f"/v25.0/{WABA}/message_templates",
        WABA,
        200,
    )
    assert (second.object_id, second.status) == (WABA, 401)
    assert TOKEN not in repr(sim.calls) and "?" not in repr(sim.calls)


# --- control API ------------------------------------------------------------------------


async def test_control_api_drives_state(http: aiohttp.ClientSession, root: str) -> None:
    waba = "300"
    assert (await call(http, "POST", f"{root}/_sim/reset"))[0] == 200
    await call(http, "POST", f"{root}/_sim/wabas/{waba}", json={"token": "t3", "name": "Three"})
    _, body, _ = await call(
        http,
        "POST",
        f"{root}/_sim/wabas/{waba}/templates",
        json=[{"id": "9", "name": "hi", "language": "en", "status": "PENDING"}],
    )
    assert body == {"count": 1}
    _, body, _ = await call(
        http, "POST", f"{root}/_sim/wabas/{waba}/templates", json={"count": 3, "pending": 1}
    )
    assert body == {"count": 3}
    _, body, _ = await call(
        http,
        "POST",
        f"{root}/_sim/templates/9/status",
        json={"status": "REJECTED", "rejected_reason": "SCAM"},
    )
    assert (body["status"], body["rejected_reason"]) == ("REJECTED", "SCAM")

    graph = await call(
        http,
        "GET",
        f"{root}/v25.0/9",
        headers={"Authorization": "Bearer t3"},
        params={"fields": "status,rejected_reason"},
    )
    assert graph[1] == {"id": "9", "status": "REJECTED", "rejected_reason": "SCAM"}
    _, listed, _ = await call(http, "GET", f"{root}/_sim/wabas/{waba}/templates")
    assert len(listed["data"]) == 4

    _, calls, _ = await call(http, "GET", f"{root}/_sim/calls")
    assert [c["object_id"] for c in calls["calls"]] == ["9"]  # control calls are not logged


async def test_control_api_faults(http: aiohttp.ClientSession, root: str) -> None:
    _, fault, _ = await call(
        http, "POST", f"{root}/_sim/faults", json={"target": WABA, "kind": "80008", "sticky": True}
    )
    assert fault["remaining"] is None
    assert (await call(http, "GET", templates_url(root)))[0] == 400
    await call(http, "DELETE", f"{root}/_sim/faults")
    assert (await call(http, "GET", templates_url(root)))[0] == 200


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/_sim/faults", {"kind": "nope"}, 400),
        ("/_sim/faults", {"kind": "5xx", "colour": "red"}, 400),
        ("/_sim/faults", [1], 400),
        ("/_sim/wabas/1/templates", [{"id": "1"}], 400),
        ("/_sim/wabas/1/templates", {"templates": "x"}, 400),
        ("/_sim/templates/404/status", {"status": "APPROVED"}, 404),
        ("/_sim/templates/404/status", {}, 400),
    ],
)
async def test_control_api_rejects_bad_input(
    http: aiohttp.ClientSession, root: str, path: str, payload: Any, status: int
) -> None:
    got, body, _ = await call(http, "POST", root + path, json=payload)
    assert got == status and "error" in body


@pytest.mark.parametrize(
    ("path", "payload", "accepted"),
    [
        ("/_sim/faults", {"kind": "5xx", "colour": "red"}, "kind, message, meta_body"),
        ("/_sim/templates/9/status", {"status": "APPROVED", "colour": "red"},
         "category, quality_score, rejected_reason, status"),
        (f"/_sim/wabas/{WABA}", {"token": "t", "colour": "red"}, "name, token"),
        (f"/_sim/wabas/{WABA}/templates", {"count": 2, "colour": "red"}, "count, pending"),
        (f"/_sim/wabas/{WABA}/templates", {"templates": [], "colour": "red"}, "templates"),
    ],
)  # fmt: skip
async def test_control_api_names_an_unknown_key_and_the_accepted_ones(
    http: aiohttp.ClientSession, root: str, path: str, payload: Any, accepted: str
) -> None:
    got, body, _ = await call(http, "POST", root + path, json=payload)
    assert got == 400, body
    assert body["error"].startswith("unknown key 'colour'; accepted: ")
    assert accepted in body["error"]
    assert "argument" not in body["error"]  # not Python's TypeError


async def test_control_api_takes_every_fault_option(http: aiohttp.ClientSession, root: str) -> None:
    options = {"kind": "error", "target": WABA, "times": 2, "http_status": 400, "code": 100,
               "subcode": 33, "message": "m", "is_transient": False, "delay_s": 0.1,
               "regain_min": 1, "meta_body": True, "body": "{}"}  # fmt: skip
    got, body, _ = await call(http, "POST", f"{root}/_sim/faults", json=options)
    assert got == 200 and body["remaining"] == 2
    got, body, _ = await call(
        http, "POST", f"{root}/_sim/faults", json={"kind": "5xx", "sticky": True}
    )
    assert got == 200 and body["remaining"] is None


async def test_control_api_rejects_non_json(http: aiohttp.ClientSession, root: str) -> None:
    got, _, _ = await call(http, "POST", f"{root}/_sim/faults", data=b"{oops")
    assert got == 400


# --- helpers ----------------------------------------------------------------------------


def test_make_templates_is_deterministic_and_unique_per_waba() -> None:
    first = make_templates(WABA, 1000, pending=50)
    assert first == make_templates(WABA, 1000, pending=50)
    assert len({t["id"] for t in first}) == 1000
    assert sum(t["status"] == "PENDING" for t in first) == 50
    other_ids = {t["id"] for t in make_templates(OTHER_WABA, 1000)}
    assert not other_ids & {t["id"] for t in first}
    assert [t["id"] for t in make_templates(WABA, 2, start_id=5)] == ["5", "6"]


def test_templates_are_replaced_in_place_and_owned_by_one_waba(sim: Simulator) -> None:
    sim.add_templates(WABA, make_templates(WABA, 3, start_id=1))
    sim.add_templates(WABA, [{"id": "2", "name": "new", "language": "en", "status": "PAUSED"}])
    assert [t["name"] for t in sim.templates(WABA)] == ["template_00000", "new", "template_00002"]
    with pytest.raises(ValueError, match="another WABA"):
        sim.add_templates(OTHER_WABA, make_templates(OTHER_WABA, 1, start_id=1))
