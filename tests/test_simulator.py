"""The Graph simulator over real loopback HTTP: Graph routes, template writes and their
review (with the signed webhook it sends), faults and control API."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from service.demo_receivers import Receiver, receiving
from service.simulator import (
    Fault,
    Simulator,
    Verdict,
    base_url,
    bound_port,
    make_templates,
    serve,
)
from service.simulator_graph import DEFAULT_LIMIT, MAX_LIMIT
from service.webhooks import SIGNATURE_HEADER, verify_signature

from .waiting import eventually

WABA = "102290129340398"
OTHER_WABA = "200000000000001"
TOKEN = "sim-token-abc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    """The simulator's clock, moved by the test (Meta's hourly, daily and 30-day limits)."""

    def __init__(self) -> None:
        self.t_s = 1_000_000.0

    def __call__(self) -> float:
        return self.t_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Simulator:
    sim = Simulator(clock=clock, review_delay_s=None)  # tests that review turn it on
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


# --- template writes: create ------------------------------------------------------------

SECRET = "meta-app-secret"
BODY = {"type": "BODY", "text": "Your order {{1}} has shipped.", "example": {"body_text": [["42"]]}}


def new_template(
    name: str = "order_shipped", language: str = "en_US", **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "language": language,
        "category": "UTILITY",
        "components": [BODY],
        **extra,
    }


async def create(
    http: aiohttp.ClientSession, root: str, **fields: Any
) -> tuple[int, Any, Mapping[str, str]]:
    return await call(http, "POST", templates_url(root), json=new_template(**fields))


def refused(answer: tuple[int, Any, Mapping[str, str]]) -> tuple[int, int, int | None]:
    """HTTP status, code and subcode of a Graph error (KeyError when it is none)."""
    error = answer[1]["error"]
    assert error["fbtrace_id"] and error["type"] in ("OAuthException", "GraphMethodException")
    return answer[0], error["code"], error.get("error_subcode")


def status_of(sim: Simulator, template_id: str) -> str:
    return str(sim.state.template(template_id)["status"])


async def test_create_answers_like_meta_and_lists_the_template(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    status, body, _ = await create(http, root, parameter_format="POSITIONAL")
    assert status == 200 and set(body) == {"id", "status", "category"}
    assert (body["status"], body["category"]) == ("PENDING", "UTILITY")
    assert body["id"].isdecimal() and len(body["id"]) == 16
    fields = {"fields": "name,language,status,components,parameter_format"}
    _, listed, _ = await call(http, "GET", templates_url(root), params=fields)
    assert listed["data"] == [{"id": body["id"], "name": "order_shipped", "language": "en_US",
                               "status": "PENDING", "components": [BODY],
                               "parameter_format": "POSITIONAL"}]  # fmt: skip
    second = await create(http, root, name="order_shipped", language="pt_BR")
    assert second[0] == 200 and second[1]["id"] != body["id"]  # one name, several languages


async def test_create_takes_a_form_body_as_graph_does(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    form = {**new_template(), "components": json.dumps([BODY])}
    status, body, _ = await call(http, "POST", templates_url(root), data=form)
    assert status == 200, body
    assert sim.state.template(body["id"])["components"] == [BODY]


async def test_create_may_answer_approved_at_once(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.create_status = "APPROVED"
    sim.review_delay_s = 0.0
    _, body, _ = await create(http, root)
    assert body["status"] == "APPROVED" and status_of(sim, body["id"]) == "APPROVED"
    assert sim.reviews.waiting == 0  # nothing left to review


@pytest.mark.parametrize(
    ("change", "subcode"),
    [
        ({"name": None}, None),
        ({"components": None}, None),
        ({"name": "Order_Shipped"}, 2388042),
        ({"name": "order-shipped"}, 2388042),
        ({"name": "x" * 513}, 2388042),
        ({"language": "english"}, 2388043),
        ({"category": "PROMOTION"}, None),
        ({"parameter_format": "BRACES"}, None),
        ({"allow_category_change": "maybe"}, None),
        ({"components": {"type": "BODY"}}, None),
        ({"components": []}, 2388044),
        ({"components": [{"type": "FOOTER", "text": "bye"}]}, 2388044),
        ({"components": [BODY, BODY]}, 2388044),
        ({"components": [BODY, {"type": "BANNER"}]}, 2388044),
        ({"components": [{"type": "BODY"}]}, 2388044),
        ({"components": [{"type": "BODY", "text": "x" * 1025}]}, 2388044),
    ],
)
async def test_create_refuses_what_meta_refuses(
    sim: Simulator, http: aiohttp.ClientSession, root: str, change: dict[str, Any],
    subcode: int | None,
) -> None:  # fmt: skip
    template = {k: v for k, v in {**new_template(), **change}.items() if v is not None}
    answer = await call(http, "POST", templates_url(root), json=template)
    assert refused(answer) == (400, 100, subcode)
    error = answer[1]["error"]
    if subcode is None:
        assert error["message"].startswith("(#100) ")  # Graph's own parameter check
    else:
        assert error["message"] == "Invalid parameter" and error["is_transient"] is False
        assert error["error_user_title"] and error["error_user_msg"]
    assert sim.templates(WABA) == []


async def test_authentication_body_needs_no_text(http: aiohttp.ClientSession, root: str) -> None:
    body = {"type": "BODY", "add_security_recommendation": True}
    otp = new_template("login_code", category="AUTHENTICATION", components=[body])
    assert (await call(http, "POST", templates_url(root), json=otp))[0] == 200


async def test_create_refuses_a_name_and_language_in_use(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    assert (await create(http, root))[0] == 200
    answer = await create(http, root)
    assert refused(answer) == (400, 100, 2388023)
    assert "already exists" in answer[1]["error"]["error_user_title"]
    assert len(sim.templates(WABA)) == 1


async def test_hundred_creates_an_hour_per_waba(
    sim: Simulator, clock: Clock, http: aiohttp.ClientSession, root: str
) -> None:
    for i in range(100):
        assert (await create(http, root, name=f"t_{i}"))[0] == 200
        clock.t_s += 6  # 100 creates over 10 minutes
    answer = await create(http, root, name="t_100")
    assert refused(answer) == (400, 80008, None)
    usage = json.loads(answer[2]["X-Business-Use-Case-Usage"])[WABA][0]
    assert usage["estimated_time_to_regain_access"] == 50  # the first create leaves in 50 min
    other = {"Authorization": "Bearer other-token"}
    answer = await call(
        http, "POST", templates_url(root, OTHER_WABA), json=new_template("t_100"), headers=other
    )
    assert answer[0] == 200  # the limit is per WABA
    clock.t_s += 50 * 60 + 1  # the first create is now an hour old
    assert (await create(http, root, name="t_100"))[0] == 200
    assert refused(await create(http, root, name="t_101"))[1] == 80008
    assert len(sim.templates(WABA)) == 101


# --- template writes: review and its webhook --------------------------------------------


@pytest.fixture
async def receiver(sim: Simulator) -> AsyncIterator[Receiver]:
    """The service's webhook endpoint, stood in for on loopback; the simulator reviews at once
    and sends its verdicts there."""
    async with receiving("the webhook endpoint", "/webhooks/meta") as got:
        sim.review_delay_s = 0.01
        sim.set_webhook(got.url, app_secret=SECRET)
        yield got


async def verified_change(receiver: Receiver) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next delivery's entry and its one change, once its signature verifies."""
    receipt = await receiver.next()
    verify_signature(receipt.body, receipt.headers.get(SIGNATURE_HEADER), [SECRET.encode()])
    document = json.loads(receipt.body)
    assert document["object"] == "whatsapp_business_account"
    (entry,) = document["entry"]
    (change,) = entry["changes"]
    assert change["field"] == "message_template_status_update"
    return entry, change["value"]


async def test_create_is_reviewed_and_the_signed_webhook_sent(
    sim: Simulator, http: aiohttp.ClientSession, root: str, receiver: Receiver
) -> None:
    _, created, _ = await create(http, root)
    entry, value = await verified_change(receiver)
    assert entry["id"] == WABA and abs(entry["time"] - time.time()) < 60
    assert value == {"event": "APPROVED", "message_template_id": int(created["id"]),
                     "message_template_name": "order_shipped",
                     "message_template_language": "en_US", "reason": "NONE"}  # fmt: skip
    assert status_of(sim, created["id"]) == "APPROVED"
    (record,) = sim.webhooks
    assert (record.template_id, record.event, record.status, record.dropped) == (
        created["id"],
        "APPROVED",
        200,
        False,
    )
    assert SECRET not in repr(record)


async def test_reject_prefix_and_queued_verdicts(
    sim: Simulator, http: aiohttp.ClientSession, root: str, receiver: Receiver
) -> None:
    _, rejected, _ = await create(http, root, name="reject_this_one")
    _, value = await verified_change(receiver)
    assert (value["event"], value["reason"]) == ("REJECTED", "INVALID_FORMAT")
    assert sim.state.template(rejected["id"])["rejected_reason"] == "INVALID_FORMAT"

    verdicts = [{"status": "REJECTED", "reason": "SCAM"}, {"status": "APPROVED"}]
    got, review, _ = await call(http, "POST", f"{root}/_sim/review", json={"verdicts": verdicts})
    assert got == 200 and len(review["verdicts"]) == 2
    for name in ("first", "second", "reject_third"):  # queued verdicts come before the rules
        await create(http, root, name=name)
        _, value = await verified_change(receiver)
        assert value["message_template_name"] == name
        assert (value["event"], value["reason"]) == {
            "first": ("REJECTED", "SCAM"), "second": ("APPROVED", "NONE"),
            "reject_third": ("REJECTED", "INVALID_FORMAT"),
        }[name]  # fmt: skip


async def test_a_category_change_meta_was_not_allowed_rejects(
    sim: Simulator, http: aiohttp.ClientSession, root: str, receiver: Receiver
) -> None:
    sim.queue_verdicts(Verdict(category="MARKETING"), Verdict(category="MARKETING"))
    _, moved, _ = await create(http, root, name="moved")
    _, kept, _ = await create(http, root, name="kept", allow_category_change=False)
    for _ in range(2):
        await verified_change(receiver)
    assert sim.state.template(moved["id"])["category"] == "MARKETING"
    assert status_of(sim, moved["id"]) == "APPROVED"
    kept_now = sim.state.template(kept["id"])
    assert (kept_now["status"], kept_now["rejected_reason"], kept_now["category"]) == (
        "REJECTED",
        "INCORRECT_CATEGORY",
        "UTILITY",
    )


async def test_dropped_webhooks_leave_the_status_to_the_poller(
    sim: Simulator, http: aiohttp.ClientSession, root: str, receiver: Receiver
) -> None:
    answer = await call(http, "POST", f"{root}/_sim/webhook", json={"drop_webhooks": True})
    assert answer[0] == 200 and answer[1]["drop_webhooks"] is True
    assert answer[1]["url"] == receiver.url and answer[1]["signed"] is True
    _, lost, _ = await create(http, root, name="lost")
    await eventually(lambda: sim.webhooks, message="the review of the dropped one")
    assert sim.webhooks[0].dropped and sim.webhooks[0].status is None
    assert status_of(sim, lost["id"]) == "APPROVED"  # Meta decided; the listing shows it

    await call(http, "POST", f"{root}/_sim/webhook", json={"drop_webhooks": False})
    await create(http, root, name="found")
    _, value = await verified_change(receiver)
    assert value["message_template_name"] == "found"  # the dropped one never came
    _, shown, _ = await call(http, "GET", f"{root}/_sim/webhook")
    assert [(d["template_id"], d["dropped"]) for d in shown["deliveries"]] == [
        (lost["id"], True),
        (sim.webhooks[1].template_id, False),
    ]
    assert SECRET not in json.dumps(shown)


async def test_without_a_delay_nothing_is_reviewed_and_reset_forgets_reviews(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    _, manual, _ = await create(http, root, name="manual")
    assert sim.reviews.waiting == 0 and status_of(sim, manual["id"]) == "PENDING"
    sim.review_delay_s = 60.0
    await create(http, root, name="slow")
    assert sim.reviews.waiting == 1
    assert (await call(http, "POST", f"{root}/_sim/reset"))[0] == 200
    await eventually(lambda: sim.reviews.waiting == 0)
    assert sim.templates(WABA) == []


async def test_unreachable_webhook_url_is_recorded(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    async with receiving("a receiver that goes away", "/gone") as gone:
        url = gone.url
    sim.review_delay_s = 0.0
    sim.set_webhook(url, app_secret=SECRET)
    await create(http, root)
    record = await eventually(lambda: sim.webhooks and sim.webhooks[0])
    assert (record.status, record.error, record.dropped) == (None, "ClientConnectorError", False)


# --- template writes: edit --------------------------------------------------------------


async def approved(sim: Simulator, http: aiohttp.ClientSession, root: str, **fields: Any) -> str:
    """A template created through the Graph API and approved (without a webhook)."""
    _, body, _ = await create(http, root, **fields)
    sim.set_status(body["id"], "APPROVED")
    return str(body["id"])


async def edit(
    http: aiohttp.ClientSession, root: str, template_id: str, **changes: Any
) -> tuple[int, Any, Mapping[str, str]]:
    return await call(http, "POST", f"{root}/v25.0/{template_id}", json=changes)


async def test_edit_sends_the_template_back_to_review(
    sim: Simulator, http: aiohttp.ClientSession, root: str, receiver: Receiver
) -> None:
    template_id = await approved(sim, http, root)
    new_body = {"type": "BODY", "text": "Order {{1}} is on its way."}
    assert (await edit(http, root, template_id, components=[new_body]))[:2] == (
        200,
        {"success": True},
    )
    assert sim.state.template(template_id)["components"] == [new_body]
    assert status_of(sim, template_id) == "PENDING"
    _, value = await verified_change(receiver)
    assert (value["message_template_id"], value["event"]) == (int(template_id), "APPROVED")


async def test_edit_limits_of_an_approved_template(
    sim: Simulator, clock: Clock, http: aiohttp.ClientSession, root: str
) -> None:
    template_id = await approved(sim, http, root)
    components = [{"type": "BODY", "text": "Edited"}]
    assert (await edit(http, root, template_id, components=components))[0] == 200
    assert refused(await edit(http, root, template_id, components=components)) == (
        400,
        100,
        2388045,  # PENDING: not editable
    )
    sim.set_status(template_id, "APPROVED")
    answer = await edit(http, root, template_id, components=components)
    assert (
        refused(answer) == (400, 100, 2388047)
        and "1 time in 1 day" in answer[1]["error"]["error_user_msg"]
    )
    for _ in range(9):  # one a day: ten in 30 days
        clock.t_s += 86400
        assert (await edit(http, root, template_id, components=components))[0] == 200
        sim.set_status(template_id, "APPROVED")
    clock.t_s += 86400
    answer = await edit(http, root, template_id, components=components)
    assert "10 times in 30 days" in answer[1]["error"]["error_user_msg"]
    sim.set_status(template_id, "REJECTED")  # rejected or paused: no limit
    assert (await edit(http, root, template_id, components=components))[0] == 200


async def test_edit_category_only_when_not_approved(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    template_id = await approved(sim, http, root)
    assert refused(await edit(http, root, template_id, category="MARKETING"))[2] == 2388046
    sim.set_status(template_id, "PAUSED")
    assert (await edit(http, root, template_id, category="MARKETING"))[0] == 200
    assert sim.state.template(template_id)["category"] == "MARKETING"


@pytest.mark.parametrize(
    ("changes", "subcode"),
    [({}, None), ({"category": "OTHER"}, None), ({"components": [{"type": "HEADER"}]}, 2388044)],
)
async def test_edit_refuses_bad_bodies(
    sim: Simulator, http: aiohttp.ClientSession, root: str, changes: dict[str, Any],
    subcode: int | None,
) -> None:  # fmt: skip
    template_id = await approved(sim, http, root)
    assert refused(await edit(http, root, template_id, **changes)) == (400, 100, subcode)
    assert status_of(sim, template_id) == "APPROVED"


async def test_edit_of_unknown_or_foreign_objects(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    answer = await edit(http, root, "404", components=[BODY])
    assert (
        refused(answer) == (400, 100, 33)
        and "Unsupported post request" in answer[1]["error"]["message"]
    )
    assert refused(await edit(http, root, WABA, components=[BODY]))[2] == 33
    sim.add_templates(
        OTHER_WABA, [{"id": "77", "name": "n", "language": "en", "status": "APPROVED"}]
    )
    assert refused(await edit(http, root, "77", components=[BODY]))[:2] == (403, 200)


# --- template writes: delete ------------------------------------------------------------


async def delete(
    http: aiohttp.ClientSession, root: str, **params: str
) -> tuple[int, Any, Mapping[str, str]]:
    return await call(http, "DELETE", templates_url(root), params=params)


async def test_delete_one_language_by_hsm_id(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    english = await approved(sim, http, root)
    spanish = await approved(sim, http, root, language="es")
    assert (await delete(http, root, name="order_shipped", hsm_id=english))[:2] == (
        200,
        {"success": True},
    )
    assert (status_of(sim, english), status_of(sim, spanish)) == ("DELETED", "APPROVED")
    _, one, _ = await call(http, "GET", f"{root}/v25.0/{english}", params={"fields": "status"})
    assert one == {"id": english, "status": "DELETED"}
    assert refused(await delete(http, root, name="order_shipped", hsm_id=english))[2] == 2593002
    assert refused(await delete(http, root, name="other_name", hsm_id=spanish))[2] == 2593002


async def test_delete_by_name_removes_every_language(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    ids = [await approved(sim, http, root, language=lang) for lang in ("en_US", "es", "pt_BR")]
    await approved(sim, http, root, name="another")
    assert (await delete(http, root, name="order_shipped"))[0] == 200
    assert [status_of(sim, i) for i in ids] == ["DELETED"] * 3
    answer = await delete(http, root, name="order_shipped")
    assert refused(answer) == (400, 100, 2593002)
    assert answer[1]["error"]["error_user_title"] == "Message template not found"
    assert refused(await delete(http, root)) == (400, 100, None)  # name is required


async def test_deleted_approved_name_is_held_for_thirty_days(
    sim: Simulator, clock: Clock, http: aiohttp.ClientSession, root: str
) -> None:
    await approved(sim, http, root)
    await delete(http, root, name="order_shipped")
    answer = await create(http, root)
    assert refused(answer) == (400, 100, 2388024)
    assert "being deleted" in answer[1]["error"]["error_user_title"]
    assert (await create(http, root, language="es"))[0] == 200  # another language is free
    clock.t_s += 30 * 86400 + 1
    assert (await create(http, root))[0] == 200


async def test_deleted_pending_name_is_free_at_once(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    _, pending, _ = await create(http, root)
    await delete(http, root, name="order_shipped", hsm_id=pending["id"])
    assert (await create(http, root))[0] == 200
    assert [t["status"] for t in sim.templates(WABA)] == ["DELETED", "PENDING"]


# --- template writes: auth, faults, call log --------------------------------------------


async def test_writes_check_tokens_and_permissions(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    template_id = await approved(sim, http, root)
    attempts = [
        ("POST", templates_url(root), {"json": new_template("x")}),
        ("POST", f"{root}/v25.0/{template_id}", {"json": {"components": [BODY]}}),
        ("DELETE", templates_url(root), {"params": {"name": "order_shipped"}}),
    ]
    for method, url, kwargs in attempts:
        status, body, _ = await call(http, method, url, headers={}, **kwargs)
        assert (status, body["error"]["code"]) == (401, 190)
        other = {"Authorization": "Bearer other-token"}
        assert refused(await call(http, method, url, headers=other, **kwargs))[:2] == (403, 200)
    assert [t["name"] for t in sim.templates(WABA)] == ["order_shipped"]
    assert status_of(sim, template_id) == "APPROVED"


async def test_writes_need_the_appsecret_proof(http: aiohttp.ClientSession) -> None:
    sim = Simulator(app_secret=SECRET, review_delay_s=None)
    sim.add_waba(WABA, TOKEN)
    runner = await serve(sim)
    url = f"{base_url(runner)}/{WABA}/message_templates"
    proof = hmac.new(SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    try:
        missing = await call(http, "POST", url, json=new_template())
        ok = await call(http, "POST", url, json=new_template(), params={"appsecret_proof": proof})
    finally:
        await runner.cleanup()
    assert "appsecret_proof" in missing[1]["error"]["message"] and ok[0] == 200


async def test_faults_and_call_log_cover_writes(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    sim.fail(WABA, "5xx", http_status=503)
    sim.fail(WABA, "error", code=2, is_transient=True, http_status=500)
    assert (await create(http, root))[0] == 503
    assert refused(await delete(http, root, name="x"))[:2] == (500, 2)
    assert sim.templates(WABA) == []  # a failed write changes nothing
    _, created, _ = await create(http, root)
    sim.fail(created["id"], "80008")  # a fault aimed at the template hits its edit
    sim.set_status(created["id"], "APPROVED")
    assert refused(await edit(http, root, created["id"], components=[BODY]))[1] == 80008
    assert [(c.method, c.object_id, c.status) for c in sim.calls] == [
        ("POST", WABA, 503), ("DELETE", WABA, 500), ("POST", WABA, 200),
        ("POST", created["id"], 400),
    ]  # fmt: skip
    assert TOKEN not in repr(sim.calls)


# --- control API for the reviewer -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/_sim/webhook", {"url": "http://127.0.0.1:9/hook"}),  # nothing to sign with
        ("/_sim/webhook", {"url": "ftp://127.0.0.1/hook", "app_secret": "s"}),
        ("/_sim/webhook", {"url": "http://127.0.0.1:9/hook", "app_secret": ""}),
        ("/_sim/webhook", {"drop_webhooks": "yes"}),
        ("/_sim/webhook", {"colour": "red"}),
        ("/_sim/review", {"delay_s": -1}),
        ("/_sim/review", {"delay_s": "soon"}),
        ("/_sim/review", {"verdicts": ["APPROVED"]}),
        ("/_sim/review", {"verdicts": [{"status": "APPROVED", "colour": "red"}]}),
        ("/_sim/review", {"create_status": ""}),
    ],
)
async def test_reviewer_control_rejects_bad_input(
    sim: Simulator, http: aiohttp.ClientSession, root: str, path: str, payload: Any
) -> None:
    got, body, _ = await call(http, "POST", root + path, json=payload)
    assert got == 400 and "error" in body
    assert sim.webhook_url is None and not sim.state.verdicts


async def test_reviewer_control_sets_and_shows(
    sim: Simulator, http: aiohttp.ClientSession, root: str
) -> None:
    settings = {"delay_s": 0.5, "create_status": "APPROVED", "verdicts": [{"status": "REJECTED"}]}
    _, review, _ = await call(http, "POST", f"{root}/_sim/review", json=settings)
    verdict = {"status": "REJECTED", "reason": "NONE", "category": None}
    assert review == {
        "delay_s": 0.5,
        "create_status": "APPROVED",
        "waiting": 0,
        "verdicts": [verdict],
    }
    hook = {"url": "http://127.0.0.1:9/hook", "app_secret": SECRET}
    _, shown, _ = await call(http, "POST", f"{root}/_sim/webhook", json=hook)
    assert shown == {"url": hook["url"], "signed": True, "drop_webhooks": False, "deliveries": []}
    assert sim.webhook_secret == SECRET
    _, off, _ = await call(http, "POST", f"{root}/_sim/webhook", json={"url": None})
    assert off["url"] is None and sim.webhook_secret == SECRET


def test_simulator_options_for_webhooks() -> None:
    with pytest.raises(ValueError, match="app_secret"):
        Simulator(webhook_url="http://127.0.0.1:9/hook")
    sim = Simulator(app_secret=SECRET, webhook_url="http://127.0.0.1:9/hook", drop_webhooks=True)
    assert (sim.webhook_secret, sim.drop_webhooks) == (SECRET, True)
